"""Text from outside (a service's answer, its log lines) made safe to show: on a terminal, in JSON, in XML.

A response body or a log line can hold escape sequences (ESC ... moves the cursor, rewrites the screen, sets the
window title) and bytes XML 1.0 forbids (NUL, most C0 controls, lone surrogates), which make a JUnit report not
well-formed. Each such character becomes a visible escape (`\\x1b`), so nothing is hidden and nothing acts.
"""

from __future__ import annotations

import re

# C0 controls except tab and newline, DEL, C1 controls, surrogates (a body decoded with surrogateescape),
# and the two non-characters XML excludes.
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]")


def _escape(m: re.Match) -> str:
    code = ord(m.group(0))
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: str, *, newlines: bool = True) -> str:
    """`text` with every control character escaped (tabs kept; newlines kept unless `newlines=False`)."""
    if not text:
        return text
    out = _UNSAFE.sub(_escape, text)
    return out if newlines else out.replace("\n", "\\n")
