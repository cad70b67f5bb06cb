"""relay's own logs: JSON lines when stderr is not a terminal, readable text otherwise; secrets masked.

Every configured secret (Langfuse keys, tenant tokens) is registered with ``SecretMask`` and replaced by ``***``
in any log line, as a second line of defence: relay's code never logs configuration values or prompt text.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Iterable

__all__ = ["setup_logging", "SecretMask", "JsonFormatter"]

_STD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``ts`` (RFC 3339, UTC), ``level``, ``logger``, ``msg``, any ``extra=`` fields,
    and ``exc`` with the traceback when present."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one JSON line."""
        out = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for k, v in record.__dict__.items():
            if k not in _STD and not k.startswith("_"):
                out[k] = v
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


class SecretMask(logging.Filter):
    """Replaces registered secret strings in formatted log messages with ``***``."""

    def __init__(self) -> None:
        super().__init__()
        self._secrets: set[str] = set()

    def add(self, secrets: Iterable[str]) -> None:
        """Register secrets (strings shorter than 6 characters are ignored to avoid masking common words)."""
        self._secrets.update(s for s in secrets if s and len(s) >= 6)

    def filter(self, record: logging.LogRecord) -> bool:
        """Mask registered secrets in the record's message; always keeps the record."""
        if self._secrets:
            msg = record.getMessage()
            masked = msg
            for s in self._secrets:
                if s in masked:
                    masked = masked.replace(s, "***")
            if masked is not msg and masked != msg:
                record.msg, record.args = masked, None
        return True


MASK = SecretMask()


def setup_logging(level: str = "info", fmt: str = "auto") -> SecretMask:
    """Configure the root logger on stderr; ``fmt`` is ``json``, ``text`` or ``auto`` (JSON unless a TTY).
    Returns the process-wide ``SecretMask`` to register secrets with."""
    handler = logging.StreamHandler(sys.stderr)
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    handler.setFormatter(
        JsonFormatter() if use_json else logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    )
    handler.addFilter(MASK)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("aiohttp.access",):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return MASK
