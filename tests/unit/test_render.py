"""The renderer and the redaction it applies to everything it writes."""

from __future__ import annotations

import io
import json

import pytest

from deployctl import redact, views
from deployctl.errors import ConfigError
from deployctl.render import Renderer
from deployctl.results import Result


@pytest.fixture(autouse=True)
def clean_registry():
    redact.clear()
    yield
    redact.clear()


class Sample(Result):
    schema_name = "sample"
    flag: bool
    note: str

    def view(self) -> list[views.Block]:
        return [views.Fields([("note", self.note)])]


def test_json_stays_valid_when_a_secret_looks_like_json_syntax():
    for value in ("true", "false", "null", '": "'):
        redact.register(value)
    out = io.StringIO()
    Renderer(json_mode=True, stdout=out, stderr=io.StringIO()).result(Sample(flag=True, note="it is true"))
    doc = json.loads(out.getvalue())
    assert doc["ok"] is True and doc["data"]["flag"] is True
    assert doc["data"]["note"] == "it is ***"


def test_errors_in_json_are_masked_and_valid():
    redact.register("s3cr3t-value")
    out = io.StringIO()
    Renderer(json_mode=True, stdout=out, stderr=io.StringIO()).error(ConfigError("bad s3cr3t-value", hint="x"))
    doc = json.loads(out.getvalue())
    assert doc["ok"] is False and doc["errors"][0]["message"] == "bad ***"


def test_human_output_masks_a_secret_split_across_writes():
    redact.register("split-secret-value")
    sink = io.StringIO()
    writer = redact.RedactingWriter(sink)
    writer.write("a split-sec")
    writer.write("ret-value b\n")
    writer.flush()
    assert sink.getvalue() == "a *** b\n"


def test_encoded_forms_are_masked():
    pw = "p@ss w+rd/%é"
    redact.register(pw)
    from base64 import b64encode
    from urllib.parse import quote, quote_plus

    for form in (pw, quote(pw, safe=""), quote_plus(pw), b64encode(pw.encode()).decode(), json.dumps(pw)[1:-1]):
        assert redact.redact(f"<{form}>") == "<***>", form


def test_live_progress_keeps_one_line_per_subject_on_a_terminal():
    from rich.console import Console

    from deployctl.context import Event

    err = io.StringIO()
    r = Renderer(stdout=io.StringIO(), stderr=err, live=True)
    r.err = Console(file=r._err_stream, force_terminal=True, width=100, no_color=True)
    with r.live_progress():
        r.event(Event("fiat-gateway", "creating revision"))
        r.event(Event("api-key-service", "health gate passed", "ok"))
        r.event(Event("fiat-gateway", "deployed fiat-gateway-0001", "ok"))
    r.flush()
    import re

    # Rich redraws the region in place; the last frame (after the last cursor-up) is what stays on screen.
    last_frame = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", err.getvalue().rsplit("\x1b[1A", 1)[-1])
    lines = [line.strip() for line in last_frame.splitlines() if line.strip()]
    assert lines == ["✓ fiat-gateway    deployed fiat-gateway-0001", "✓ api-key-service health gate passed"]


def test_plain_progress_lines_off_a_terminal():
    from deployctl.context import Event

    err = io.StringIO()
    r = Renderer(stdout=io.StringIO(), stderr=err)
    assert r.live_enabled is False
    with r.live_progress():
        r.event(Event("fiat-gateway", "creating revision"))
        r.event(Event("fiat-gateway", "deployed", "ok"))
    r.flush()
    assert err.getvalue().splitlines() == ["· fiat-gateway: creating revision", "✓ fiat-gateway: deployed"]


WRAPPED_SECRET = "Cn@ry:/?#%+ ü-ßée wraps"
FRAGMENTS = ("Cn@ry", "ü-ß", "ßée")


class Wide(Result):
    schema_name = "wide"

    def view(self) -> list[views.Block]:
        long = "x" * 25 + " " + WRAPPED_SECRET + " tail"
        return [views.Line(long), views.Fields([("k", long), (WRAPPED_SECRET, "v")], title=long),
                views.Table(["a", "b"], [[long, views.Cell(long, "warn")]], title=long),
                views.Tree(views.Node(long, [views.Node(views.dim(long))])), views.Note(long)]


def test_a_secret_is_masked_before_rich_wraps_it(monkeypatch):
    """Rich folds text to the width; a secret split over two lines would pass the line filter (B3)."""
    from deployctl.context import Event

    monkeypatch.setenv("COLUMNS", "30")
    redact.register(WRAPPED_SECRET)
    out, err = io.StringIO(), io.StringIO()
    r = Renderer(stdout=out, stderr=err, verbose=True)
    r.result(Wide())
    r.event(Event("svc " + WRAPPED_SECRET, "message " * 4 + WRAPPED_SECRET))
    r.note("note " * 4 + WRAPPED_SECRET)
    r.error(ConfigError("error " * 4 + WRAPPED_SECRET, hint="hint " * 4 + WRAPPED_SECRET))
    text = out.getvalue() + err.getvalue()
    assert "***" in out.getvalue() and "***" in err.getvalue()
    for fragment in FRAGMENTS:
        assert fragment not in text, (fragment, text)


def test_the_live_table_never_shows_a_secrets_prefix():
    from rich.console import Console

    from deployctl.context import Event

    redact.register(WRAPPED_SECRET)
    err = io.StringIO()
    r = Renderer(stdout=io.StringIO(), stderr=err, live=True)
    r.err = Console(file=r._err_stream, force_terminal=True, width=46, no_color=True)
    with r.live_progress():
        r.event(Event("svc", "a long message that ends with " + WRAPPED_SECRET))  # cut with an ellipsis
    r.flush()
    for fragment in FRAGMENTS:
        assert fragment not in err.getvalue()


@pytest.fixture()
def key_file(tmp_path, monkeypatch):
    monkeypatch.delenv("DEPLOYCTL_FINGERPRINT_KEY", raising=False)
    yield tmp_path / "state" / "fingerprint.key"
    redact.use_key_file(None)


def test_the_fingerprint_key_is_made_once_per_state_dir_and_private(key_file):
    import os
    import stat

    redact.use_key_file(key_file)
    first = redact.fingerprint("same value")
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600 and key_file.stat().st_size == redact.KEY_BYTES
    redact.use_key_file(None)  # another process, as far as the key goes
    assert redact.fingerprint("same value") != first
    redact.use_key_file(key_file)
    assert redact.fingerprint("same value") == first != redact.fingerprint("other value")
    assert [p.name for p in key_file.parent.iterdir()] == ["fingerprint.key"]  # no temporary file left
    os.environ["DEPLOYCTL_FINGERPRINT_KEY"] = "given"
    try:
        redact.use_key_file(None)
        redact.use_key_file(key_file)
        assert redact.fingerprint("same value") != first  # the variable wins
    finally:
        del os.environ["DEPLOYCTL_FINGERPRINT_KEY"]


def test_an_unusable_state_dir_falls_back_to_a_key_per_process(key_file, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    redact.use_key_file(blocker / "fingerprint.key")
    assert redact.fingerprint("v").startswith("fp:")
    key_file.parent.mkdir()
    key_file.write_bytes(b"short")  # damaged: not used, not overwritten
    redact.use_key_file(key_file)
    assert redact.fingerprint("v").startswith("fp:") and key_file.read_bytes() == b"short"


def test_control_characters_in_text_are_shown_not_acted_on():
    out, err = io.StringIO(), io.StringIO()
    r = Renderer(stdout=out, stderr=err, no_color=True)
    r.result(Sample(flag=True, note="title\x1b]0;owned\x07 end"))
    r.note("bell\x07 and\x1b[2J clear")
    assert "\x1b" not in out.getvalue() + err.getvalue() and "\x07" not in out.getvalue() + err.getvalue()
    assert "title\\x1b]0;owned\\x07 end" in out.getvalue() and "and\\x1b[2J clear" in err.getvalue()


def test_github_annotations_keep_every_line_encoded(monkeypatch):
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    err = io.StringIO()
    Renderer(stdout=io.StringIO(), stderr=err, no_color=True).error(ConfigError("100% broken\nsecond line\r"))
    [line] = [ln for ln in err.getvalue().splitlines() if ln.startswith("::error::")]
    assert line == "::error::100%25 broken%0Asecond line%0D"


def test_github_annotations_are_masked_before_they_are_encoded(monkeypatch):
    """%-encoding first would turn a registered secret with '%' into a form nothing masks."""
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    secret = "N3w p@ss:/?#%+ é"
    redact.register(secret)
    err = io.StringIO()
    Renderer(stdout=io.StringIO(), stderr=err, no_color=True).error(ConfigError(f"login with {secret} failed"))
    [line] = [ln for ln in err.getvalue().splitlines() if ln.startswith("::error::")]
    assert line == "::error::login with *** failed" and "p@ss" not in err.getvalue()


@pytest.mark.parametrize("columns, width", [("abc", 160), ("0", 160), ("-3", 160), ("", 160), (" 72 ", 72)])
def test_a_columns_that_is_no_width_falls_back(monkeypatch, columns, width):
    """COLUMNS=abc was a ValueError traceback before any command ran; COLUMNS=0 made every table and line vanish."""
    monkeypatch.setenv("COLUMNS", columns)
    out, err = io.StringIO(), io.StringIO()
    r = Renderer(stdout=out, stderr=err)
    assert r.out.width == width and r.err.width == width
    r.result(Sample(flag=True, note="shown"))
    r.error(ConfigError("a message", hint="a hint"))
    assert "shown" in out.getvalue() and "a message" in err.getvalue() and "a hint" in err.getvalue()
