"""One module per verb: plain functions taking a Context and returning typed results. No Typer, no Rich."""

from __future__ import annotations

from deployctl.errors import UsageError


def names_or_all(verb: str, services: list[str] | None, all_: bool) -> None:
    """Named services and --all answer one question twice: refuse both instead of silently acting on the names."""
    if services and all_:
        raise UsageError(f"name the services to {verb} or pass --all, not both",
                         hint=f"deployctl {verb} {' '.join(services)}, or deployctl {verb} --all")
