"""The one renderer: Rich for people, the versioned JSON envelope for machines.

Results go to stdout (for people: tables and trees; with --json: the envelope and nothing else). Progress,
warnings and errors for people go to stderr.

Redaction happens twice. Every string is redacted before it becomes Rich text (`_t`): Rich wraps and folds
lines to the width, and a secret split across two lines would pass a line-by-line filter. Both streams then
pass through redact.RedactingWriter as a second layer (for text written around the renderer). Only a
Revealed block (--reveal) and the JSON envelope (redacted value by value, envelope()) skip the stream layer.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape
from rich.table import Table as RichTable
from rich.text import Text
from rich.tree import Tree as RichTree

from deployctl import redact, views
from deployctl.context import Event
from deployctl.errors import DeployctlError
from deployctl.printable import printable

if TYPE_CHECKING:
    from deployctl.results import Result

# Messages on stderr are never hard-wrapped (soft_wrap): a path or a command in them must survive a copy/paste
# and a grep, whatever the terminal's width.
STYLES = {"ok": "green", "warn": "yellow", "fail": "bold red", "skip": "dim", "info": "", "dim": "dim",
          "bold": "bold", "": ""}
SHORT_CELL = 40  # characters: a table column whose values are all this short is never wrapped
SYMBOLS = {"ok": "✓", "warn": "!", "fail": "✗", "skip": "-", "info": "·"}


def _width(stream) -> int | None:
    """The consoles' width: COLUMNS when it is a positive number; else, off a terminal (CI logs, pipes), 160 (Rich
    would wrap at 80; tables read better wider), and on one the terminal's own. A COLUMNS that is no number was a
    traceback; COLUMNS=0 made Rich print nothing at all."""
    columns = os.environ.get("COLUMNS", "").strip()
    if columns.isdecimal() and int(columns) > 0:
        return int(columns)
    if not stream.isatty():
        return 160
    return shutil.get_terminal_size().columns if columns else None  # None: Rich asks the terminal itself


def envelope(schema: str, ok: bool, data, errors: list[dict], *, revealed: bool = False) -> dict:
    doc = {"schema": f"deployctl/{schema}/v1", "ok": ok, "data": data, "errors": errors}
    return doc if revealed else redact.redact_obj(doc)


class Renderer:
    def __init__(self, *, json_mode: bool = False, verbose: bool = False, no_color: bool = False,
                 stdout=None, stderr=None, live: bool | None = None) -> None:
        self.json_mode = json_mode
        self.verbose = verbose
        no_color = no_color or bool(os.environ.get("NO_COLOR"))
        self._out_stream = redact.RedactingWriter(stdout or sys.stdout)
        self._err_stream = redact.RedactingWriter(stderr or sys.stderr)
        width = _width(stdout or sys.stdout)
        self.out = Console(file=self._out_stream, no_color=no_color, highlight=False, width=width)
        self.err = Console(file=self._err_stream, no_color=no_color, highlight=False, stderr=True, width=width)
        self.github = os.environ.get("GITHUB_ACTIONS") == "true"
        self._lock = threading.Lock()
        ci = os.environ.get("CI", "").lower() in ("true", "1")
        self.live_enabled = (live if live is not None
                             else self.err.is_terminal and not json_mode and not verbose and not ci)
        self._live = None
        self._live_rows: dict[str, Event] = {}

    # --- results -------------------------------------------------------------------------------------
    def result(self, result: Result) -> None:
        # Only a result the user asked to reveal (--reveal) skips redaction, and only on stdout.
        revealed = bool(getattr(result, "revealed", False))
        if self.json_mode:
            data = result.model_dump(mode="json")
            doc = envelope(result.schema_name, result.ok, data, result.errors(), revealed=revealed)
            self._json(doc)
        else:
            for block in result.view():
                self._block(block)
            for err in result.errors():
                self._github_error(err.get("message", ""))
        self.flush()

    def error(self, err: DeployctlError, schema: str = "error") -> None:
        if self.json_mode:
            self._json(envelope(schema, False, None,
                                [{"code": err.code, "message": err.message, "hint": err.hint}]))
        else:
            self.err.print(Text("error: ", style="bold red") + _t(err.message), soft_wrap=True)
            if err.hint:
                self.err.print(Text("  next: ", style="bold") + _t(err.hint), soft_wrap=True)
        self._github_error(err.message)
        self.flush()

    def unexpected(self, log_path: str | None) -> None:
        message = "deployctl hit an unexpected error (a bug)."
        hint = (f"the details are in {log_path}; please attach it to a bug report" if log_path
                else "re-run with --verbose for details")
        self.error(DeployctlError(message, hint=hint, code="internal"))

    def _json(self, payload: dict) -> None:
        """Write an envelope already redacted value by value (envelope()). It bypasses the stream's line
        redaction on purpose: masking the serialised text could hit JSON syntax (a secret equal to `true`,
        a key) and corrupt the document; values were masked before serialising."""
        text = json.dumps(payload, indent=2, sort_keys=False) + "\n"
        self._out_stream.flush()
        self._out_stream.raw.write(text)

    def _github_error(self, message: str) -> None:
        if self.github and message:
            # A workflow command is one line: GitHub decodes %25, %0D and %0A back, so the whole message shows.
            data = redact.redact(message).replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
            self._err_stream.write(f"::error::{data}\n")

    # --- progress ------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def live_progress(self) -> Iterator[None]:
        """On a terminal, progress becomes a live table with one line per subject (service); in CI, through a
        pipe, with --json or --verbose, it stays plain lines (a log that reads top to bottom)."""
        if not self.live_enabled:
            yield
            return
        from rich.live import Live

        self._live_rows = {}
        with Live(self._live_table(), console=self.err, refresh_per_second=8, transient=False) as live:
            self._live = live
            try:
                yield
            finally:
                with self._lock:
                    self._live = None
                    live.update(self._live_table(), refresh=True)

    def _live_table(self) -> RichTable:
        table = RichTable.grid(padding=(0, 1))
        for subject, event in self._live_rows.items():
            message = _t(event.message)
            message.overflow, message.no_wrap = "ellipsis", True
            table.add_row(Text(SYMBOLS.get(event.status, "·"), style=STYLES.get(event.status, "")),
                          _t(subject, "bold"), message)
        return table

    def event(self, event: Event) -> None:
        if event.detail and not self.verbose:
            return
        with self._lock:
            if self._live is not None and event.subject:
                self._live_rows[event.subject] = event
                self._live.update(self._live_table())
                return
            symbol = SYMBOLS.get(event.status, "·")
            line = Text(f"{symbol} ", style=STYLES.get(event.status, ""))
            if event.subject:
                line += _t(f"{event.subject}: ", "bold")
            line += _t(event.message)
            self.err.print(line, soft_wrap=True)

    def note(self, message: str, style: str = "") -> None:
        self.err.print(_t(message, style), soft_wrap=True)

    def flush(self) -> None:
        self._out_stream.flush()
        self._err_stream.flush()

    # --- blocks --------------------------------------------------------------------------------------
    def _block(self, block: views.Block) -> None:
        if isinstance(block, views.Table):
            table = RichTable(title=_t(block.title) if block.title else None, title_justify="left",
                              header_style="bold")
            longest = [max([len(col)] + [len(_text(row[i]).plain) for row in block.rows if i < len(row)])
                       for i, col in enumerate(block.columns)]
            # Short values (names, ids, rules, states) are kept whole when the long columns can still get
            # some room; long text wraps at spaces. On a very narrow terminal Rich shrinks every column.
            short = [n <= SHORT_CELL for n in longest]
            room = sum(n + 3 for n, s in zip(longest, short, strict=True) if s) + 12 * short.count(False)
            keep_whole = room <= self.out.width
            for col, n, is_short in zip(block.columns, longest, short, strict=True):
                whole = keep_whole and is_short
                table.add_column(_t(col), overflow="fold", no_wrap=whole, min_width=n if whole else None)
            for row in block.rows:
                table.add_row(*(_text(c) for c in row))
            self.out.print(table)
        elif isinstance(block, views.Fields):
            if block.title:
                self.out.print(_t(block.title, "bold"))
            width = max((len(k) for k, _ in block.items), default=0)
            for key, value in block.items:
                self.out.print(_t(f"  {key.ljust(width)}  ", "dim") + _text(value))
        elif isinstance(block, views.Tree):
            self.out.print(_tree(block.root))
        elif isinstance(block, views.Line):
            self.out.print(_t(block.text, block.style))
        elif isinstance(block, views.Revealed):
            self._revealed(block)
        elif isinstance(block, views.Note):
            self.err.print(_t(block.text, block.style), soft_wrap=True)
        elif isinstance(block, views.Code):
            self._out_stream.write(block.text if block.text.endswith("\n") else block.text + "\n")
        else:  # pragma: no cover - a new block type without a renderer is a bug
            raise TypeError(f"no renderer for {type(block).__name__}")

    def _revealed(self, block: views.Revealed) -> None:
        raw = self._out_stream.raw
        data = block.data if block.data is not None else block.text.encode("utf-8", "surrogateescape")
        if raw.isatty() and not data.endswith(b"\n"):
            data += b"\n"  # for the prompt's sake; a pipe gets the value exactly
        self._out_stream.flush()
        buffer = getattr(raw, "buffer", None)
        if buffer is None:  # a text-only stream (tests): the closest it can hold
            raw.write(data.decode("utf-8", "replace"))
            return
        raw.flush()
        buffer.write(data)
        buffer.flush()


def _t(text: str, style: str = "") -> Text:
    """Rich text from a string redacted first, while a secret is still whole (before any wrapping), with
    control characters made visible (a second layer: text from outside is escaped where it is read)."""
    return Text(printable(redact.redact(text)), style=STYLES.get(style, style))


def _text(cell: views.CellLike) -> Text:
    if cell is None:
        return Text("")
    if isinstance(cell, views.Cell):
        return _t(cell.text, cell.style)
    return _t(str(cell))


def _tree(node: views.Node, parent: RichTree | None = None) -> RichTree:
    label = _text(node.label)
    branch = RichTree(label) if parent is None else parent.add(label)
    for child in node.children:
        _tree(child, branch)
    return branch


__all__ = ["Renderer", "envelope", "escape"]
