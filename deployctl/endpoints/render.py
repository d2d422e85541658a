"""Fill `${service}` backend addresses with deployed URLs and `${project}` in the Endpoints service name (`host`,
or the x-google-endpoint server's url) with the environment's project, editing only those values in the text so
the spec's comments and layout survive (a re-dump through PyYAML would drop every comment)."""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass

from deployctl.endpoints.load import JsonPath, Spec, dotted, parse_spec
from deployctl.endpoints.rules import PLACEHOLDER, PROJECT_PLACEHOLDER, address_sites, project_sites
from deployctl.errors import DeployctlError, UsageError

ENDPOINTS_HOST = re.compile(r"\.endpoints\.(?P<project>[a-z][-a-z0-9]*)\.cloud\.goog$")


@dataclass(frozen=True)
class Site:
    path: JsonPath
    service: str
    suffix: str


@dataclass(frozen=True)
class Filled:
    path: str
    service: str
    url: str
    line: int | None


class NotDeployed(DeployctlError):
    code = "not-deployed"


class UnknownService(UsageError):
    code = "unknown-service"


def sites(spec: Spec) -> list[Site]:
    """Every backend address written as a placeholder, in document order."""
    out = []
    for path, address in address_sites(spec.data):
        m = PLACEHOLDER.match(address)
        if m:
            out.append(Site(path, m["service"], m["suffix"] or ""))
    return out


def services(spec: Spec) -> list[str]:
    return sorted({s.service for s in sites(spec)})


def render(spec: Spec, urls: dict[str, str], *, env: str = "local", project: str | None = None,
           configured: list[str] | None = None) -> tuple[str, list[Filled]]:
    """The spec's text with every placeholder replaced: a service's URL, the project. Refuses when a service is
    not one of `configured` (the environment's [services.*], when known) or not deployed."""
    todo = sites(spec)
    wanted = sorted({s.service for s in todo})
    unknown = [name for name in wanted if configured is not None and name not in configured]
    if unknown:
        raise UnknownService(
            f"{spec.path}: {', '.join('${' + n + '}' for n in unknown)} names no service of environment {env!r}",
            hint=f"fix the placeholder: the services of configs/{env}.toml are {', '.join(configured) or '(none)'}",
            details={"services": unknown})
    missing = [name for name in wanted if name not in urls]
    if missing:
        raise NotDeployed(
            f"{spec.path}: no deployed URL for {', '.join(missing)} in environment {env!r}",
            hint=f"deploy first: `deployctl --env {env} deploy {' '.join(missing)}`", details={"services": missing})
    values = {s.path: urls[s.service].rstrip("/") + s.suffix for s in todo}
    if project:
        values.update({at: value.replace(PROJECT_PLACEHOLDER, project) for at, value in project_sites(spec.data)
                       if PROJECT_PLACEHOLDER in value})
    text = _edit_in_place(spec, values)
    if text is None or not _check(text, spec, values):
        text = _dump(spec, values)
    filled = [Filled(dotted(s.path), s.service, values[s.path], spec.line(s.path)) for s in todo]
    filled += [Filled(dotted(at), "project", value, spec.line(at)) for at, value in values.items()
               if at[0] in ("host", "servers")]
    return text, filled


def other_projects(spec: Spec, project: str) -> list[str]:
    """Endpoints service names written for a project other than `project` (a spec rendered for the wrong one)."""
    out = []
    for at, value in project_sites(spec.data):
        host = value.split("://", 1)[-1].split("/", 1)[0]
        m = ENDPOINTS_HOST.search(host)
        if m and m["project"] != project:
            out.append(f"{dotted(at)} names project {m['project']!r}, not {project!r}: {host}")
    return out


def _edit_in_place(spec: Spec, values: dict[JsonPath, str]) -> str | None:
    edits: dict[int, tuple[int, str]] = {}
    for path, value in values.items():
        span = spec.spans.get(path)
        if span is None:  # e.g. reached through a YAML merge key: no single place in the text
            return None
        edits[span.start] = (span.end, json.dumps(value))  # a JSON string is valid YAML, quoted or not
    text = spec.text
    for start in sorted(edits, reverse=True):
        end, value = edits[start]
        text = text[:start] + value + text[end:]
    return text


def _check(text: str, spec: Spec, values: dict[JsonPath, str]) -> bool:
    """The edited text parses and holds exactly the intended addresses (an alias shared by two places is fine)."""
    try:
        again = parse_spec(text, spec.path)
    except DeployctlError:
        return False
    return all(_get(again.data, path) == value for path, value in values.items())


def _get(data, path: JsonPath):
    for part in path:
        try:
            data = data[part]
        except (KeyError, IndexError, TypeError):
            return None
    return data


def _dump(spec: Spec, values: dict[JsonPath, str]) -> str:
    data = copy.deepcopy(spec.data)
    for path, value in values.items():
        node = data
        for part in path[:-1]:
            node = node[part]
        node[path[-1]] = value
    if spec.path.suffix.lower() == ".json":
        return json.dumps(data, indent=2) + "\n"
    import yaml

    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
