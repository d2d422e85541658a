"""End-to-end fixtures: the CLI as a user runs it, as a subprocess, against a local cloud of its own."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


class Cli:
    def __init__(self, state_dir: Path, config_dir: Path = ROOT / "configs") -> None:
        self.state_dir = state_dir
        self.config_dir = config_dir
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("DEPLOYCTL_")}
        self.env.update(DEPLOYCTL_STATE_DIR=str(state_dir), DEPLOYCTL_CONFIG_DIR=str(config_dir), CI="true",
                        NO_COLOR="1", COLUMNS="200")

    def __call__(self, *args: str, input: bytes | str | None = None, timeout: float = 180,
                 env: dict | None = None) -> Run:
        data = input.encode() if isinstance(input, str) else input
        proc = subprocess.run([sys.executable, "-m", "deployctl", *args], input=data, capture_output=True,
                              timeout=timeout, env={**self.env, **(env or {})}, cwd=str(ROOT))
        return Run(proc.returncode, proc.stdout.decode("utf-8", "replace"), proc.stderr.decode("utf-8", "replace"))


@pytest.fixture(scope="session")
def local_cloud(tmp_path_factory):
    """A local cloud brought up with `deployctl local up`, torn down with `local down --purge`."""
    cli = Cli(tmp_path_factory.mktemp("local-cloud"))
    up = cli("local", "up")
    assert up.code == 0, up.output
    yield cli
    down = cli("--yes", "local", "down", "--purge")
    assert down.code == 0, down.output
