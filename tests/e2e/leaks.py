"""The no-leak assertion the e2e tests share: a password appears in no output in any encoding, whole or in part.

A raw '@' or ':' makes parsers cut a password apart (one error message showed 14 of its 17 characters as a
"host"), so besides the whole value in each encoding, every run of WINDOW characters of it is looked for too.
"""

from __future__ import annotations

import base64
from urllib.parse import quote, quote_plus

WINDOW = 8  # characters: long enough not to occur by chance in output, short enough to catch a fragment


def forms(value: str) -> set[str]:
    out = {value, quote(value, safe=""), quote(value), quote_plus(value),
           base64.b64encode(value.encode()).decode(), base64.urlsafe_b64encode(value.encode()).decode()}
    if len(value) > WINDOW:
        out |= {value[i:i + WINDOW] for i in range(len(value) - WINDOW + 1)}
    return {f for f in out if len(f) >= 4}


def assert_no_leak(values, *outputs: str) -> None:
    for value in {v for v in values if v and len(v.strip()) >= 4}:
        for form in forms(value) | forms(value.strip()):
            for out in outputs:
                assert form not in out, f"a password leaked into the output ({len(form)} characters of it)"
