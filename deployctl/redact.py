"""Every secret value deployctl touches is registered here; everything printed or logged passes through it.

A value is registered in the forms it can take on its way out: raw, percent-encoded (both `quote` flavours),
`quote_plus`-encoded, base64 (standard and URL-safe, with and without padding), JSON-escaped and repr-escaped,
and the same without a trailing newline and in Unicode's composed and decomposed normal forms (NFC, NFD). `redact()` replaces each with MASK, longest first, so a value is
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
import unicodedata
from urllib.parse import quote, quote_plus

MASK = "***"
# Shorter values would mask ordinary words, so they are not registered: `secrets set` refuses to store them.
MIN_LENGTH = 4

_lock = threading.Lock()
_forms: set[str] = set()
_ordered: list[str] = []

KEY_BYTES = 32
_key_lock = threading.Lock()
_key_file: str | None = None  # <state dir>/fingerprint.key, set by the CLI (use_key_file)
_fingerprint_key: bytes | None = None  # read or made on the first fingerprint


def _variants(value: str) -> set[str]:
    out: set[str] = set()
    trimmed = {value, value.rstrip("\r\n"), value.strip()}
    # Unicode normal forms: one password can be written composed or decomposed (SCRAM treats them as one)
    forms = trimmed | {unicodedata.normalize(nf, v) for v in trimmed for nf in ("NFC", "NFD")}
    for v in forms:
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
    """A short, keyed fingerprint: equal values compare equal across runs that share a state dir (the key is
    kept there), and without the key the value cannot be guessed from it offline, not even a short one."""
    if value is None:
        return "none"
    if isinstance(value, str):
        value = value.encode("utf-8", "surrogateescape")
    return "fp:" + hmac.new(_key(), value, hashlib.sha256).hexdigest()[:10]


def use_key_file(path: str | os.PathLike | None) -> None:
    """Keep the fingerprint key in `path` (made on first use, mode 0600). DEPLOYCTL_FINGERPRINT_KEY overrides
    it; where the file can be neither read nor made, each process uses a key of its own."""
    global _key_file, _fingerprint_key
    path = None if path is None else os.fspath(path)
    with _key_lock:
        if path != _key_file:
            _key_file, _fingerprint_key = path, None


def _key() -> bytes:
    global _fingerprint_key
    with _key_lock:
        if _fingerprint_key is None:
            given = os.environ.get("DEPLOYCTL_FINGERPRINT_KEY", "").encode()
            _fingerprint_key = given or (_key_file and _stored_key(_key_file)) or os.urandom(KEY_BYTES)
        return _fingerprint_key


def _stored_key(path: str) -> bytes | None:
    try:
        return _read_key(path)
    except FileNotFoundError:
        pass
    except OSError:
        return None
    try:
        os.makedirs(os.path.dirname(path) or ".", mode=0o700, exist_ok=True)
        # Written in full under a private name, then linked into place: a concurrent first run either wins
        # the link or reads the winner's key; nobody sees a half-written file.
        tmp = f"{path}.{os.getpid()}.{os.urandom(4).hex()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(os.urandom(KEY_BYTES))
                f.flush()
                os.fsync(f.fileno())
            try:
                os.link(tmp, path)
            except FileExistsError:
                pass
        finally:
            os.unlink(tmp)
        return _read_key(path)
    except OSError:
        return None


def _read_key(path: str) -> bytes | None:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    with os.fdopen(fd, "rb") as f:
        key = f.read(KEY_BYTES + 1)
    return key if len(key) == KEY_BYTES else None  # damaged: a key of this process's own


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
