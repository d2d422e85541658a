"""The value syntax of check steps, kept small and safe (string substitution only, never evaluation):

    ${steps.<step>.<var>}     a value saved by an earlier step of the same check (`save` / `save_secret`)
    ${secret:<id>[:<version>]} a Secret Manager value (registered for redaction before it is used)
    ${run}                    a short id unique to this run (for idempotency keys, account ids...)
    $$                        a literal "$"

A string that is exactly one `${steps...}` reference takes the saved value with its JSON type (a number stays a
number); anywhere else the value is inserted as text. JSON paths (`expect`, `save`) are dotted field names with
list indexes as numbers: `transfers.0.id`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

_TOKEN = re.compile(r"\$\$|\$\{([^{}]*)\}")
_NAME = r"[A-Za-z_][A-Za-z0-9_-]{0,62}"
_STEP_REF = re.compile(rf"steps\.({_NAME})\.({_NAME})")
_SECRET_REF = re.compile(r"secret:([A-Za-z0-9_-]{1,255})(?::(latest|[1-9][0-9]{0,9}))?")


class TemplateError(ValueError):
    """A reference that cannot be parsed or resolved. Its message names the reference, never a value."""


@dataclass(frozen=True)
class Ref:
    kind: str  # steps | secret | run
    name: str = ""  # the step, or the secret id
    key: str = ""  # the saved variable, or the secret version

    def __str__(self) -> str:
        if self.kind == "steps":
            return f"${{steps.{self.name}.{self.key}}}"
        if self.kind == "secret":
            return f"${{secret:{self.name}:{self.key}}}"
        return "${run}"


def parse_ref(expr: str) -> Ref:
    if expr == "run":
        return Ref("run")
    if m := _STEP_REF.fullmatch(expr):
        return Ref("steps", m.group(1), m.group(2))
    if m := _SECRET_REF.fullmatch(expr):
        return Ref("secret", m.group(1), m.group(2) or "latest")
    raise TemplateError(f"unknown reference ${{{expr}}}: use ${{steps.STEP.VAR}}, ${{secret:NAME}} or ${{run}}")


def _strings(value: Any):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


def references(value: Any) -> list[Ref]:
    """Every reference inside a string, or inside the strings of a JSON-like value (raises TemplateError)."""
    return [parse_ref(m.group(1)) for s in _strings(value) for m in _TOKEN.finditer(s) if m.group(0) != "$$"]


Resolver = Callable[[Ref], Any]


def render(value: Any, resolve: Resolver) -> Any:
    """`value` with every reference replaced by `resolve(ref)`; dict keys are left as they are."""
    if isinstance(value, dict):
        return {k: render(v, resolve) for k, v in value.items()}
    if isinstance(value, list):
        return [render(v, resolve) for v in value]
    if not isinstance(value, str):
        return value
    whole = _TOKEN.fullmatch(value)
    if whole and whole.group(1) is not None:
        ref = parse_ref(whole.group(1))
        if ref.kind == "steps":
            return resolve(ref)

    def one(m: re.Match) -> str:
        if m.group(0) == "$$":
            return "$"
        out = resolve(parse_ref(m.group(1)))
        if isinstance(out, (dict, list)):
            import json

            return json.dumps(out, separators=(",", ":"))
        return "" if out is None else str(out).lower() if isinstance(out, bool) else str(out)

    return _TOKEN.sub(one, value)


_MISSING = object()


def lookup(doc: Any, path: str, default: Any = _MISSING) -> Any:
    """The value at a dotted JSON path; KeyError (with the part that is missing) unless `default` is given."""
    node = doc
    for i, part in enumerate(path.split(".")):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.lstrip("-").isdigit() and -len(node) <= int(part) < len(node):
            node = node[int(part)]
        else:
            if default is not _MISSING:
                return default
            raise KeyError(".".join(path.split(".")[:i + 1]))
    return node


JSON_PATH = r"^[^.\s]+(\.[^.\s]+)*$"
