"""Structured (JSON lines) logging with a filter that cuts anything token-shaped to its display prefix."""

from __future__ import annotations

import json
import logging
import sys
from contextvars import ContextVar
from datetime import UTC, datetime

from kbai.tokenformat import redact

# The id of the request being served (set by kbai.web.middleware for the whole request, thread-pool
# work included: contextvars follow it there), so that every line logged while serving it carries it.
REQUEST_ID: ContextVar[str | None] = ContextVar("kbai_request_id", default=None)


class RedactingJsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        if not hasattr(record, "request_id") and (current := REQUEST_ID.get()) is not None:
            record.request_id = current
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in ("request_id", "method", "path", "status", "duration_ms", "client"):
            if hasattr(record, key):
                entry[key] = getattr(record, key)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return redact(json.dumps(entry, ensure_ascii=False, default=str))


def configure(level: str = "INFO") -> None:
    """Route kbai's and uvicorn's logs through the redacting JSON formatter on stderr."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(RedactingJsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    # Their INFO/DEBUG lines carry full request URLs (a tenant's webhook URL may hold its receiver's secret).
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)
