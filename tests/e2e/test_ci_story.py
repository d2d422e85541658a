"""The CI story: scripts/ci-local-cloud (the local-cloud job of docs/ci.md) annotates a failing step for GitHub."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.e2e.conftest import ROOT


def run_script(tmp_path, timeout: float = 120, **env) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("DEPLOYCTL_", "GITHUB_"))}
    return subprocess.run(["bash", str(ROOT / "scripts" / "ci-local-cloud")], capture_output=True, text=True,
                          timeout=timeout, env={**base, "GITHUB_ACTIONS": "true", "CI_SKIP_BOOTSTRAP": "1",
                                            "DEPLOYCTL": f"{sys.executable} -m deployctl", "NO_COLOR": "1",
                                            "DEPLOYCTL_STATE_DIR": str(tmp_path / "state"),
                                            "JUNIT_XML": str(tmp_path / "verify.xml"), **env})


def test_the_local_cloud_job_runs_green(tmp_path):
    """The whole local-cloud job of docs/ci.md, as CI runs it: validate, deploy, verify (JUnit), doctor."""
    proc = run_script(tmp_path, timeout=300)
    try:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        for step in ("config validate", "--yes deploy --all", "verify --all --junit-xml", "doctor"):
            assert f"::group::deployctl {step}" in proc.stdout
        assert "::error::" not in proc.stderr
        junit = (tmp_path / "verify.xml").read_text()
        assert "<testsuites" in junit and 'failures="0"' in junit
    finally:
        base = {k: v for k, v in os.environ.items() if not k.startswith(("DEPLOYCTL_", "GITHUB_"))}
        subprocess.run([sys.executable, "-m", "deployctl", "--yes", "local", "down", "--purge"], cwd=str(ROOT),
                       env={**base, "DEPLOYCTL_STATE_DIR": str(tmp_path / "state")}, capture_output=True,
                       timeout=120)


def test_a_broken_step_fails_the_job_with_an_error_annotation(tmp_path):
    proc = run_script(tmp_path, DEPLOYCTL_ENV="no-such-env")
    assert proc.returncode == 2, proc.stdout + proc.stderr  # the config step: bad usage, the job stops there
    assert "::group::deployctl config validate" in proc.stdout
    annotations = [line for line in proc.stderr.splitlines() if line.startswith("::error::")]
    assert len(annotations) == 1, proc.stderr
    assert "no configuration for environment 'no-such-env'" in annotations[0]
    assert "deploy --all" not in proc.stdout  # later steps never ran
    assert "Traceback" not in proc.stderr


def test_result_errors_are_annotated_too(tmp_path):
    """The renderer's result path (a command that returns failures rather than raising) annotates each one."""
    spec = tmp_path / "bad.yaml"
    spec.write_text('swagger: "2.0"\ninfo: {title: t, version: "1"}\npaths: 7\n')
    base = {k: v for k, v in os.environ.items() if not k.startswith(("DEPLOYCTL_", "GITHUB_"))}
    proc = subprocess.run([sys.executable, "-m", "deployctl", "endpoints", "lint", str(spec)], capture_output=True,
                          text=True, timeout=60, cwd=str(ROOT),
                          env={**base, "GITHUB_ACTIONS": "true", "NO_COLOR": "1",
                               "DEPLOYCTL_STATE_DIR": str(tmp_path / "state")})
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert any(line.startswith("::error::paths") for line in proc.stderr.splitlines()), proc.stderr


def test_the_ci_doc_shows_both_jobs_and_completion():
    text = (ROOT / "docs" / "ci.md").read_text("utf-8")
    for needle in ("google-github-actions/auth", "workload_identity_provider", "deployctl doctor",
                   "deployctl migrate", "deployctl deploy", "scripts/ci-local-cloud", "bash scripts/bootstrap",
                   "deployctl verify --all --junit-xml", "--install-completion", "--show-completion"):
        assert needle in text, needle
