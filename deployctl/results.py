"""Typed results: every command returns one. The CLI renders it for people (view()) or as the versioned JSON
envelope (the model's data), through the same renderer."""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel, ConfigDict

from deployctl.errors import ExitCode
from deployctl.views import Block, Line


class Result(BaseModel):
    model_config = ConfigDict(arbitrary_types_allowed=True)

    # "secrets/list" -> {"schema": "deployctl/secrets/list/v1", ...}
    schema_name: ClassVar[str] = "result"

    @property
    def ok(self) -> bool:
        return self.exit_code() in (ExitCode.OK, ExitCode.DEGRADED)

    def exit_code(self) -> ExitCode:
        return ExitCode.OK

    def errors(self) -> list[dict]:
        """[{code, message, hint}] for the envelope when the result reports a failure."""
        return []

    def view(self) -> list[Block]:
        return [Line(str(self.model_dump(mode="json")))]


class Version(Result):
    """`deployctl --version`, which with --json is an envelope too (stdout holds nothing else)."""

    schema_name: ClassVar[str] = "version"
    version: str

    def view(self) -> list[Block]:
        return [Line(f"deployctl {self.version}")]
