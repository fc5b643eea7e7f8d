"""Hopx kernel: Jupyter kernels that run inside an isolated Linux sandbox."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def _jupyter_server_extension_points() -> list[dict[str, Any]]:
    """Where jupyter_server finds the Hopx extension (timeout policy, REST API, events)."""
    from hopx_kernel.extension import HopxExtension  # noqa: PLC0415 - only a server needs it

    return [{"module": "hopx_kernel.extension", "app": HopxExtension}]
