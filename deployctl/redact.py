"""Every secret value deployctl touches is registered here; everything printed or logged passes through it.

A value is registered in the forms it can take on its way out: raw, percent-encoded (both `quote` flavours),
`quote_plus`-encoded, base64 (standard and URL-safe, with and without padding), JSON-escaped and repr-escaped,
and the same without a trailing newline. `redact()` replaces each with MASK, longest first, so a value is
never left half-masked.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
import logging
import os
import threading
from urllib.parse import quote, quote_plus

MASK = "***"
# Shorter values would mask ordinary words; config validation refuses such passwords anyway.
MIN_LENGTH = 4

_lock = threading.Lock()
_forms: set[str] = set()
_ordered: list[str] = []
_fingerprint_key = os.environ.get("DEPLOYCTL_FINGERPRINT_KEY", "").encode() or os.urandom(16)


def _variants(value: str) -> set[str]:
    out: set[str] = set()
    for v in {value, value.rstrip("\r\n"), value.strip()}:
        if len(v) < MIN_LENGTH:
            continue
        raw = v.encode("utf-8", "surrogateescape")
        b64 = base64.b64encode(raw).decode()
        b64u = base64.urlsafe_b64encode(raw).decode()
        out |= {
            v,
            # from the bytes: a binary secret (decoded with surrogateescape) cannot be re-encoded strictly
            quote(raw, safe=""),
            quote(raw),
            quote_plus(raw),
            quote_plus(raw, safe=""),
            b64,
            b64.rstrip("="),
            b64u,
            b64u.rstrip("="),
            json.dumps(v)[1:-1],
            json.dumps(v, ensure_ascii=False)[1:-1],
            repr(v)[1:-1],
            v.replace("%", "%%"),  # as written into alembic.ini / ConfigParser
        }
    return {f for f in out if len(f) >= MIN_LENGTH}


def register(value: str | bytes | None) -> None:
    """Remember a secret value so that no output shows it."""
    if value is None:
        return
    if isinstance(value, bytes):
        value = value.decode("utf-8", "surrogateescape")
    new = _variants(value)
    with _lock:
        if new <= _forms:
            return
        _forms.update(new)
        _ordered[:] = sorted(_forms, key=len, reverse=True)


def redact(text: str) -> str:
    if not text or not _ordered:
        return text
    for form in _ordered:
        if form in text:
            text = text.replace(form, MASK)
    return text


def redact_obj(obj):
    """Redact every string inside a JSON-like structure (for the --json envelope)."""
    if isinstance(obj, str):
        return redact(obj)
    if isinstance(obj, dict):
        return {redact_obj(k): redact_obj(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [redact_obj(v) for v in obj]
    return obj


def fingerprint(value: str | bytes | None) -> str:
    """A short, keyed fingerprint: equal values compare equal within a run, the value cannot be recovered."""
    if value is None:
        return "none"
    if isinstance(value, str):
        value = value.encode("utf-8", "surrogateescape")
    return "fp:" + hmac.new(_fingerprint_key, value, hashlib.sha256).hexdigest()[:10]


def clear() -> None:
    """Forget every registered value (tests only)."""
    with _lock:
        _forms.clear()
        _ordered.clear()


class RedactingWriter(io.TextIOBase):
    """A text stream that redacts whole lines before they reach the wrapped stream.

    Buffering to the line keeps a secret split across two write() calls from slipping through.
    """

    def __init__(self, stream) -> None:
        self._stream = stream
        self._buffer = ""
        self._lock = threading.Lock()

    def write(self, s: str) -> int:
        with self._lock:
            self._buffer += s
            if "\n" in self._buffer:
                head, _, self._buffer = self._buffer.rpartition("\n")
                self._stream.write(redact(head + "\n"))
        return len(s)

    def flush(self) -> None:
        with self._lock:
            if self._buffer:
                self._stream.write(redact(self._buffer))
                self._buffer = ""
        self._stream.flush()

    @property
    def raw(self):
        """The unredacted stream: only for a value the user asked to see (--reveal)."""
        return self._stream

    def isatty(self) -> bool:
        return self._stream.isatty()

    def fileno(self) -> int:
        return self._stream.fileno()

    @property
    def encoding(self):  # type: ignore[override]
        return getattr(self._stream, "encoding", "utf-8")


class RedactingFilter(logging.Filter):
    """Redacts every log record's final message (attach to every handler deployctl installs)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = redact(record.getMessage())
        record.msg, record.args = message, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True
