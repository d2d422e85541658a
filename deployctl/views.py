"""What a result looks like to a person, as plain data. render.py turns these blocks into Rich output;
commands build them without importing Rich.

Styles are words: "ok", "warn", "fail", "skip", "info", "dim", "bold", "" (none).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Cell:
    text: str
    style: str = ""


CellLike = str | Cell | int | float | None


@dataclass
class Table:
    columns: list[str]
    rows: list[list[CellLike]]
    title: str | None = None


@dataclass
class Fields:
    """Key/value pairs, one per line."""

    items: list[tuple[str, CellLike]]
    title: str | None = None


@dataclass
class Node:
    label: CellLike
    children: list[Node] = field(default_factory=list)


@dataclass
class Tree:
    root: Node


@dataclass
class Line:
    text: str
    style: str = ""


@dataclass
class Code:
    """Literal text printed as is (SQL, a rendered spec): on stdout, so it can be piped."""

    text: str


@dataclass
class Note:
    """A message for the person at the terminal (a warning about the result): on stderr, never on stdout."""

    text: str
    style: str = "warn"


@dataclass
class Revealed:
    """A secret value the user asked to see (--reveal), the only block that bypasses redaction. Off a terminal
    it is written byte for byte, nothing added (so `get --reveal | set` copies a value exactly); on a terminal
    a final newline is added when it lacks one."""

    text: str
    data: bytes | None = None  # the exact bytes (a value that is not UTF-8 text); default: text as UTF-8


Block = Table | Fields | Tree | Line | Code | Note | Revealed


def ok(text: str) -> Cell:
    return Cell(text, "ok")


def warn(text: str) -> Cell:
    return Cell(text, "warn")


def fail(text: str) -> Cell:
    return Cell(text, "fail")


def dim(text: str) -> Cell:
    return Cell(text, "dim")
