"""Structural validation against the OpenAPI schema, by openapi-spec-validator, as findings with JSON paths.

The validator would fetch a `$ref` outside the file (http, https, file, a relative path): a linter must not
reach the network, nor hang on a host that never answers. Every scheme is refused here; rules.external_refs
reports each such $ref.
"""

from __future__ import annotations

import functools

from deployctl.endpoints.findings import Finding
from deployctl.endpoints.load import Spec, dotted

FIXES = {
    "required": "add the missing field",
    "additionalProperties": "remove or rename the field (only x- vendor extensions may be added)",
    "type": "change the value to the type the schema wants (quote numbers meant as text, e.g. version: \"1.0\")",
    "enum": "use one of the allowed values",
    "pattern": "change the value to the form the schema wants",
    "format": "change the value to the format the schema wants",
}
MAX_MESSAGE = 240


def validate(spec: Spec, data: dict | None = None) -> list[Finding]:
    """Schema errors of the spec (an empty list when it is structurally valid); `data`: the spec's data with
    render's placeholders filled in (a `${project}` in `host` breaks the schema's host pattern)."""
    cls = _validator_class(spec)
    if cls is None:
        return [Finding.error(
            "openapi-version", ("swagger",) if spec.is_v2 else ("openapi",) if spec.is_v3 else (),
            f"cannot tell the OpenAPI version ({spec.version or 'no swagger/openapi field'})",
            'start the spec with `swagger: "2.0"` (Cloud Endpoints, API Gateway) or `openapi: 3.0.3` (API Gateway)',
            spec)]
    from referencing.exceptions import Unresolvable

    findings: list[Finding] = []
    try:
        for err in cls(spec.data if data is None else data).iter_errors():
            finding = _finding(err, spec)
            if finding is not None:
                findings.append(finding)
    except Unresolvable as e:
        if _refused(e):
            findings.append(Finding.error("openapi-ref", (), _clip(
                f"the schema check stopped at a $ref outside the file, which lint does not fetch: {e}"),
                "inline the definition: the spec is uploaded as one file", spec))
        else:
            findings.append(Finding.error("openapi-ref", (), _clip(f"a $ref points nowhere: {e}"),
                                          "point the $ref at a definition that exists in this file", spec))
    except RecursionError:
        findings.append(Finding.error("openapi-ref", (), "the spec's $refs form a cycle the validator cannot follow",
                                      "break the $ref cycle", spec))
    except (LookupError, TypeError, AttributeError, ValueError, AssertionError) as e:
        # The validator's second pass (semantic checks) walks the spec assuming its structure is right and
        # breaks on wrong types (e.g. `paths: 7`); the schema errors found before it already say why.
        if not findings:
            findings.append(Finding.error(
                "openapi-schema", (), f"the spec's structure could not be checked ({type(e).__name__})",
                f"make the spec match the OpenAPI {spec.version} schema (paths, info, definitions as mappings)",
                spec))
    return findings


def _validator_class(spec: Spec):
    import openapi_spec_validator as osv

    if spec.is_v2:
        return _local_only(osv.OpenAPIV2SpecValidator) if spec.version == "2.0" else None
    version = spec.version
    for prefix, cls in (("3.0.", osv.OpenAPIV30SpecValidator), ("3.1.", osv.OpenAPIV31SpecValidator),
                        ("3.2.", osv.OpenAPIV32SpecValidator)):
        if version.startswith(prefix):
            return _local_only(cls)
    return None


class RefNotFetched(LookupError):
    """A $ref outside the file: lint does not fetch it."""


def _refuse(uri: str):
    raise RefNotFetched(uri)


# Without a handler for a scheme, jsonschema-path falls back to urlopen: name every scheme urlopen knows.
_NO_FETCH = {scheme: _refuse for scheme in ("", "<all_urls>", "http", "https", "file", "ftp", "data")}


@functools.cache
def _local_only(cls):
    return type(f"LocalOnly{cls.__name__}", (cls,), {"resolver_handlers": _NO_FETCH})


def _refused(exc: BaseException | None) -> bool:
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, RefNotFetched):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


def _finding(err, spec: Spec) -> Finding | None:
    message = err.message
    if message.startswith("Operation ID "):  # rules.operation_ids reports these with a clearer fix
        return None
    detail = _best_branch(err) if err.validator in ("oneOf", "anyOf") and err.context else None
    if detail is not None:
        err = detail
        message = detail.message
    path = tuple(err.absolute_path)
    fix = FIXES.get(str(err.validator), f"make {dotted(path)} match the OpenAPI {spec.version} schema")
    return Finding.error("openapi-schema", path, _clip(message), fix, spec)


def _best_branch(err):
    """The most telling error of a failed oneOf: from the branch the value came closest to matching."""
    branches: dict = {}
    for sub in err.context:
        key = sub.relative_schema_path[0] if sub.relative_schema_path else 0
        branches.setdefault(key, []).append(sub)

    def score(errors: list) -> int:
        # A branch rejected on its discriminator (type: apiKey vs basic, $ref vs inline) is not the one meant.
        penalty = sum(10 for e in errors if e.validator in ("enum", "const")
                      or (e.validator == "required" and "'$ref'" in e.message))
        return len(errors) + penalty

    best = min(branches.values(), key=score, default=None)
    return min(best, key=lambda e: len(e.absolute_path) * -1) if best else None


def _clip(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_MESSAGE else text[:MAX_MESSAGE - 1] + "…"

