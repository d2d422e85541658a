"""What it would take to move a spec to the other target: the steps, computed from what the spec contains."""

from __future__ import annotations

from deployctl.endpoints.load import Spec
from deployctl.endpoints.rules import CONFIG_ID, CONFIG_ID_MAX, operations

OTHER = {"endpoints": "api-gateway", "api-gateway": "endpoints"}


def other_target(target: str) -> str:
    return OTHER[target]


def steps(spec: Spec, target: str, config_id: str) -> list[str]:
    """Steps to deploy this spec on the target other than `target` (for the lint summary)."""
    if other_target(target) == "api-gateway":
        return _to_gateway(spec, config_id)
    return _to_endpoints(spec)


def _to_gateway(spec: Spec, config_id: str) -> list[str]:
    out = []
    if spec.is_v2:
        out.append("API Gateway takes this Swagger 2.0 spec as it is (x-google-backend and securityDefinitions "
                   "carry over); `host` is ignored: the gateway gets its own *.gateway.dev host name")
    elif _has_management(spec):
        out.append("API Gateway takes this OpenAPI 3.0 spec as it is (it has x-google-api-management backends)")
    else:
        out.append("API Gateway takes OpenAPI 3.0 only with backends: add x-google-api-management.backends.<name>"
                   ".address and `x-google-backend: <name>` (top level or per operation)")
    if len(config_id) > CONFIG_ID_MAX or not CONFIG_ID.match(config_id or ""):
        out.append(f"choose a valid API config id ({config_id!r} is not): pass --config-id")
    out.append(f"gcloud api-gateway api-configs create {config_id or 'CONFIG_ID'} --api=API_ID "
               f"--openapi-spec={spec.path.name}")
    return out


def _to_endpoints(spec: Spec) -> list[str]:
    if spec.is_v2:
        out = []
        if not spec.data.get("host"):
            out.append("add `host: <api-name>.endpoints.<project-id>.cloud.goog` (the Endpoints service name)")
        if any(not op.get("operationId") for _, op in operations(spec.data)):
            out.append("give every operation a unique operationId")
        out.append(f"gcloud endpoints services deploy {spec.path.name}, then run ESPv2 on Cloud Run in front of "
                   "the services")
        return out
    return convert_v3_to_v2(spec)


def convert_v3_to_v2(spec: Spec) -> list[str]:
    """Cloud Endpoints reads only Swagger 2.0: the rewrite an OpenAPI 3.x spec needs, item by item."""
    data = spec.data
    components = data.get("components") if isinstance(data.get("components"), dict) else {}
    ops = [op for _, op in operations(data)]
    out = [f"replace `openapi: {spec.version}` by `swagger: \"2.0\"`"]
    out.append("turn servers[0].url into `host` (<api-name>.endpoints.<project-id>.cloud.goog), `basePath` and "
               "`schemes: [https]`")
    if components.get("schemas"):
        out.append("move components.schemas to `definitions` and rewrite every $ref '#/components/schemas/X' "
                   "to '#/definitions/X'")
    if components.get("securitySchemes"):
        out.append("move components.securitySchemes to `securityDefinitions` (apiKey: name key in query, or "
                   "x-api-key in header)")
    if any("requestBody" in op for op in ops):
        out.append("turn each requestBody into a parameter `in: body` with its schema; list the media types "
                   "under `consumes`")
    if any(isinstance(r, dict) and "content" in r for op in ops
           for r in (op.get("responses") or {}).values()):
        out.append("turn responses.<code>.content.<type>.schema into responses.<code>.schema; list the media "
                   "types under `produces`")
    if _has_management(spec):
        out.append("replace x-google-api-management.backends and `x-google-backend: <name>` by "
                   "`x-google-backend: {address: ...}` on each operation (or once at the top level)")
    only_v3 = sorted(_keys(data) & {"oneOf", "anyOf", "nullable", "callbacks", "links", "writeOnly"})
    if only_v3:
        out.append(f"Swagger 2.0 has no {', '.join(only_v3)}: simplify those schemas")
    out.append("then lint again with --target endpoints")
    return out


def _has_management(spec: Spec) -> bool:
    m = spec.data.get("x-google-api-management")
    return isinstance(m, dict) and bool(m.get("backends"))


def _keys(node) -> set[str]:
    found: set[str] = set()
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            found.update(str(k) for k in item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return found
