"""OpenAPI specs for Cloud Endpoints (ESPv2) and API Gateway: load with line numbers, lint, render backends.

No Typer or Rich here; yaml and openapi_spec_validator are imported inside functions (they cost ~1 s and
`deployctl --help` must not pay it).
"""
