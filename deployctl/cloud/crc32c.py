"""CRC32C (Castagnoli), the checksum Secret Manager puts on every payload.

Pure Python because neither `google-crc32c` nor `crc32c` is installed; payloads are at most 64 KiB, which this
table-driven loop checksums in a few milliseconds. Shared by the emulator and cloud/secrets.py (stdlib only).
"""

from __future__ import annotations

_POLY = 0x82F63B78  # reflected Castagnoli polynomial


def _table() -> tuple[int, ...]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ _POLY if c & 1 else c >> 1
        table.append(c)
    return tuple(table)


_TABLE = _table()


def crc32c(data: bytes, value: int = 0) -> int:
    """The CRC32C of `data` as an unsigned 32-bit int (continue a running checksum with `value`)."""
    crc = value ^ 0xFFFFFFFF
    table = _TABLE
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF
