"""Opt-in: the same commands against a real Google Cloud project (`pytest -m gcp`).

Needs Application Default Credentials and DEPLOYCTL_GCP_ENV naming an environment in configs/ (or in
DEPLOYCTL_GCP_CONFIG_DIR) whose project you may read. Read-only: status, doctor, secrets list, migrate status.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.gcp
ROOT = Path(__file__).resolve().parents[2]
ENV = os.environ.get("DEPLOYCTL_GCP_ENV")


def _has_credentials() -> bool:
    try:
        import google.auth

        google.auth.default()
        return True
    except Exception:
        return False


requires_project = pytest.mark.skipif(not ENV or not _has_credentials(),
                                      reason="set DEPLOYCTL_GCP_ENV and Application Default Credentials")


def run(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("DEPLOYCTL_EMULATOR_HOST", "DEPLOYCTL_SQLADMIN_ENDPOINT")}
    config_dir = os.environ.get("DEPLOYCTL_GCP_CONFIG_DIR", str(ROOT / "configs"))
    return subprocess.run([sys.executable, "-m", "deployctl", "--env", ENV, "--config-dir", config_dir, "--json",
                           *args], capture_output=True, text=True, timeout=300, env={**env, "CI": "true"})


@requires_project
@pytest.mark.parametrize("args, schema", [(("status",), "status"), (("secrets", "list"), "secrets/list"),
                                          (("doctor",), "doctor"), (("migrate", "status"), "migrate/status")])
def test_read_only_commands_answer_with_their_envelope(args, schema):
    """The command read the project and reported on it: findings may fail it (exit 1 or 3), an error that
    stopped it (credentials, permission, config: data is null) may not."""
    out = run(*args)
    assert "Traceback" not in out.stderr
    doc = json.loads(out.stdout)
    assert doc["schema"] == f"deployctl/{schema}/v1", doc
    assert doc["data"] is not None, doc["errors"]
    assert out.returncode in ((0,) if args == ("secrets", "list") else (0, 1, 3)), doc
