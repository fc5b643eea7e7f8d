"""Secrets' values kept out of this process's log.

Hopx never logs a value, but others may: a library that logs what it sent, a traceback that
quotes a variable. The values the provisioners fetched are held here while their kernels run,
and a filter on every log handler masks them (as runtime.kernel_launcher does in the kernel's
messages) in each record's message and traceback before it is written. The kernel's own output
to the log is masked by its supervisor (runtime.kernel_log).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping

from runtime.kernel_launcher import Masker


class LogRedaction(logging.Filter):
    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._secrets: dict[str, dict[str, str]] = {}
        self._masker = Masker({})

    def add(self, owner: str, secrets: Mapping[str, str]) -> None:
        """Mask `secrets` (variable: value) until `remove(owner)`; also on handlers made since
        the last call."""
        with self._lock:
            self._secrets[owner] = dict(secrets)
            self._rebuild()
        self.attach()

    def remove(self, owner: str) -> None:
        with self._lock:
            if self._secrets.pop(owner, None) is not None:
                self._rebuild()

    def _rebuild(self) -> None:
        merged = {name: value for held in self._secrets.values() for name, value in held.items()}
        self._masker = Masker(merged, by_line=True)

    def filter(self, record: logging.LogRecord) -> bool:
        masker = self._masker
        if not masker:
            return True
        message = record.getMessage()
        masked = masker.text(message)
        if masked != message:
            record.msg, record.args = masked, None
        if record.exc_info and not record.exc_text:
            # Formatted now, so that the handler writes this masked text and not its own.
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = masker.text(record.exc_text)
        if record.stack_info:
            record.stack_info = masker.text(record.stack_info)
        return True

    def attach(self) -> None:
        """Filter every handler of every logger there is now."""
        loggers = [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]
        for logger in loggers:
            for handler in getattr(logger, "handlers", []):
                if self not in handler.filters:
                    handler.addFilter(self)


# One for the process: its handlers are shared by every kernel's provisioner.
LOG_REDACTION = LogRedaction()
