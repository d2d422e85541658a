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
        out.append(f"API Gateway takes this OpenAPI {spec.version} spec as it is (it has x-google-api-management "
                   "backends; the x-google-endpoint server is ignored)")
    else:
        out.append(_add_backends())
    if len(config_id) > CONFIG_ID_MAX or not CONFIG_ID.match(config_id or ""):
        out.append(f"choose a valid API config id ({config_id!r} is not): pass --config-id")
    out.append(f"gcloud api-gateway api-configs create {config_id or 'CONFIG_ID'} --api=API_ID "
               f"--openapi-spec={spec.path.name}")
    return out


def _to_endpoints(spec: Spec) -> list[str]:
    out = []
    if spec.is_v2:
        if not spec.data.get("host"):
            out.append("add `host: <api-name>.endpoints.${project}.cloud.goog` (the Endpoints service name)")
    else:
        servers = spec.data.get("servers") if isinstance(spec.data.get("servers"), list) else []
        if not any(isinstance(s, dict) and "x-google-endpoint" in s for s in servers):
            out.append("add the Endpoints service name as a server: `servers: [{url: "
                       "\"https://<api-name>.endpoints.${project}.cloud.goog\", x-google-endpoint: {}}]`")
        if not _has_management(spec):
            out.append(_add_backends())
    if any(not op.get("operationId") for _, op in operations(spec.data)):
        out.append("give every operation a unique operationId")
    out.append(f"gcloud endpoints services deploy {spec.path.name}, then run ESPv2 on Cloud Run in front of "
               "the services")
    return out


def _add_backends() -> str:
    return ("OpenAPI 3.x needs its backends under x-google-api-management: add "
            "x-google-api-management.backends.<name>.address and `x-google-backend: <name>` (top level or per "
            "operation)")


def _has_management(spec: Spec) -> bool:
    m = spec.data.get("x-google-api-management")
    return isinstance(m, dict) and bool(m.get("backends"))
