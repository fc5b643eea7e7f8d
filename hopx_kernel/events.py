"""Hopx events on jupyter_server's event bus (jupyter_events): one schema, registered on demand.

Frontends subscribe through `/api/events/subscribe`; admins route them with the server's
`EventLogger` handlers. Outside a Jupyter server (papermill, nbclient) there is no event bus and
the same facts go to the log only.
"""

from __future__ import annotations

import datetime
import pathlib
from typing import Any

SCHEMA_ID = "https://events.hopx-kernel.org/sandbox/v1"
SCHEMA_PATH = pathlib.Path(__file__).parent / "event_schemas" / "sandbox" / "v1.yaml"


def register(event_logger: Any) -> None:
    """Register the Hopx schema on `event_logger` unless it already is."""
    if SCHEMA_ID not in event_logger.schemas.schema_ids:
        event_logger.register_event_schema(SCHEMA_PATH)


def emit(event_logger: Any, action: str, kernel_id: str, msg: str, **fields: Any) -> None:
    """Emit one Hopx event; fields that are None are left out."""
    register(event_logger)
    data = {"action": action, "kernel_id": kernel_id, "msg": msg}
    data.update({k: v for k, v in fields.items() if v is not None})
    event_logger.emit(schema_id=SCHEMA_ID, data=data)


def isoformat(timestamp: float) -> str:
    """Seconds since the epoch as ISO 8601 in UTC, the way jupyter_server writes times."""
    moment = datetime.datetime.fromtimestamp(timestamp, tz=datetime.timezone.utc)
    return moment.isoformat().replace("+00:00", "Z")
