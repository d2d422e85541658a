"""The thin service packages that deployctl deploys: each a small Starlette app (see services.common)."""
