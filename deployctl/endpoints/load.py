"""Load an OpenAPI spec (YAML or JSON) into plain data, remembering where every value sits in the text.

Keys are always strings (YAML reads `200:` as an integer, which JSON Schema validators choke on), YAML
timestamps stay strings (a spec's `version: 2024-01-01` must round-trip), duplicate keys are refused (YAML
would silently keep the last one), and a syntax error names its line and column.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from pathlib import Path

from deployctl.errors import UsageError

JsonPath = tuple[str | int, ...]

# A YAML alias is built again wherever it is used, so a few aliases of aliases in a few hundred bytes expand to
# millions of values (a "billion laughs" document: 330 bytes took 22 s and 1.5 GB, one more line four times
# that). The values built through aliases are counted and the document is refused beyond this many; the shared
# parameters and responses of a real spec stay far below it.
MAX_ALIASED_VALUES = 100_000
_PLAIN_COLLECTIONS = ("tag:yaml.org,2002:map", "tag:yaml.org,2002:seq")


class SpecError(UsageError):
    code = "spec-syntax"


@dataclass(frozen=True)
class Span:
    line: int  # 1-based
    start: int  # character offsets of the value in the text
    end: int


@dataclass
class Spec:
    path: Path
    text: str
    data: dict
    spans: dict[JsonPath, Span] = field(default_factory=dict)  # JSON path -> where its value is written

    def line(self, path: JsonPath) -> int | None:
        """The line of `path`, or of its nearest ancestor that has one."""
        while True:
            span = self.spans.get(path)
            if span is not None or not path:
                return span.line if span else None
            path = path[:-1]

    @property
    def version(self) -> str:
        """'2.0', '3.0.3', ... or '' when the spec names none."""
        return str(self.data.get("swagger") or self.data.get("openapi") or "")

    @property
    def is_v2(self) -> bool:
        return "swagger" in self.data

    @property
    def is_v3(self) -> bool:
        return "openapi" in self.data and not self.is_v2


def dotted(path: JsonPath) -> str:
    """('paths', '/v1/deposits', 'post', 'operationId') -> 'paths./v1/deposits.post.operationId'."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def load_spec(path: Path) -> Spec:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(f"{path}: no such file", hint="give the path of an OpenAPI YAML or JSON file",
                        code="spec-missing") from None
    except UnicodeDecodeError as e:
        raise SpecError(f"{path}: not valid UTF-8 (byte {e.start})", hint="save the file as UTF-8") from None
    except OSError as e:
        raise SpecError(f"{path}: cannot read: {e.strerror}", hint="check the path and its permissions",
                        code="spec-unreadable") from None
    return parse_spec(text, Path(path))


def parse_spec(text: str, path: Path) -> Spec:
    if path.suffix.lower() == ".json":
        data = _parse_json(text, path)
        try:  # JSON is (almost always) YAML: read it again only for line numbers and spans
            _, spans = _parse_yaml(text, path)
        except SpecError:
            spans = {}
    else:
        data, spans = _parse_yaml(text, path)
    if not isinstance(data, dict):
        raise SpecError(f"{path}: an OpenAPI spec is a mapping at the top level, this is a "
                        f"{type(data).__name__}", hint="start the file with `swagger: \"2.0\"` or `openapi: 3.0.3`",
                        code="spec-not-mapping")
    return Spec(path=path, text=text, data=data, spans=spans)


def _parse_json(text: str, path: Path):
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise SpecError(f"{path}:{e.lineno}:{e.colno}: JSON syntax error: {e.msg}",
                        hint=f"fix the syntax at line {e.lineno} (a missing comma or quote, or a trailing comma)",
                        details={"line": e.lineno, "column": e.colno}) from None
    except RecursionError:
        raise SpecError(f"{path}: the document nests too deep", hint="a spec needs a few dozen levels at most",
                        code="spec-too-deep") from None


@functools.cache
def _loader_class():
    import yaml

    class SpecLoader(yaml.SafeLoader):
        pass

    # Without the timestamp resolver a date stays the string it is in the file.
    SpecLoader.yaml_implicit_resolvers = {
        first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
    return SpecLoader


def _parse_yaml(text: str, path: Path):
    import yaml

    try:
        loader = _loader_class()(text)  # the reader refuses control characters (e.g. NUL) here already
        root = loader.get_single_node()
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (None, None)
        where = f"{path}:{line}:{col}" if line else str(path)
        problem = " ".join(p for p in (e.context, e.problem) if p)
        raise SpecError(f"{where}: YAML syntax error: {problem}",
                        hint=f"fix the syntax at line {line} (indentation, a missing ':' or an unclosed quote)",
                        details={"line": line, "column": col}) from None
    except yaml.YAMLError as e:
        raise SpecError(f"{path}: YAML error: {e}", hint="fix the file's syntax") from None
    except RecursionError:  # PyYAML's composer recurses once per nesting level
        raise SpecError(f"{path}: the document nests too deep", hint="a spec needs a few dozen levels at most",
                        code="spec-too-deep") from None
    if root is None:
        raise SpecError(f"{path}: the file is empty", hint="write the spec, starting with `swagger: \"2.0\"`",
                        code="spec-empty")
    spans: dict[JsonPath, Span] = {}
    try:
        data = _build(root, (), spans, loader, path, depth=0, built={"nodes": set(), "aliased": 0})
    finally:
        loader.dispose()
    return data, spans


def _build(node, at: JsonPath, spans: dict, loader, path: Path, depth: int, built: dict):
    import yaml

    if depth > 200:  # an alias that refers to itself
        raise SpecError(f"{path}:{node.start_mark.line + 1}: the document nests too deep (a recursive alias?)",
                        hint="remove the recursive YAML alias")
    if id(node) in built["nodes"]:  # built before: this is (inside) an alias
        built["aliased"] += 1
        if built["aliased"] > MAX_ALIASED_VALUES:
            raise SpecError(f"{path}: its YAML aliases expand to more than {MAX_ALIASED_VALUES:,} values "
                            "(aliases of aliases?)", hint="write the repeated parts out, or use $ref",
                            code="spec-too-large")
    else:
        built["nodes"].add(id(node))
    if isinstance(node, yaml.MappingNode | yaml.SequenceNode) and node.tag not in _PLAIN_COLLECTIONS:
        line = node.start_mark.line + 1
        raise SpecError(f"{path}:{line}: could not determine a constructor for the tag {node.tag!r}",
                        hint="use plain YAML values (no custom tags)", details={"line": line})
    spans.setdefault(at, Span(node.start_mark.line + 1, node.start_mark.index, node.end_mark.index))
    if isinstance(node, yaml.MappingNode):
        out: dict = {}
        merged: dict = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base`: the mapping's own keys win
                for source in (value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]):
                    value = _build(source, at, {}, loader, path, depth + 1, built)
                    if isinstance(value, dict):
                        merged = {**value, **merged}
                continue
            key = str(key_node.value)
            if key in out:
                line = key_node.start_mark.line + 1
                raise SpecError(f"{path}:{line}: duplicate key {key!r} in {dotted(at)} (YAML keeps only the last)",
                                hint=f"remove or rename one of the two {key!r} entries",
                                code="spec-duplicate-key", details={"line": line})
            out[key] = _build(value_node, (*at, key), spans, loader, path, depth + 1, built)
        return {**merged, **out}
    if isinstance(node, yaml.SequenceNode):
        return [_build(item, (*at, i), spans, loader, path, depth + 1, built) for i, item in enumerate(node.value)]
    try:
        return loader.construct_object(node, deep=True)
    except yaml.constructor.ConstructorError as e:
        line = node.start_mark.line + 1
        raise SpecError(f"{path}:{line}: {e.problem}", hint="use plain YAML values (no custom tags)",
                        details={"line": line}) from None
