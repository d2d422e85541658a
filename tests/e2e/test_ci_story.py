"""The CI story: scripts/ci-local-cloud (the local-cloud job of docs/ci.md) runs green on a fresh local cloud,
annotates a failing step for GitHub, and runs the same deployctl steps as both workflows in docs/ci.md."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys

import yaml

from tests.e2e.conftest import ROOT

ACCEPTS_WARNINGS = "|| [ $? -eq 3 ]"


def run_script(tmp_path, timeout: float = 120, **env) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("DEPLOYCTL_", "GITHUB_"))}
    return subprocess.run(["bash", str(ROOT / "scripts" / "ci-local-cloud")], capture_output=True, text=True,
                          timeout=timeout, env={**base, "GITHUB_ACTIONS": "true", "CI_SKIP_BOOTSTRAP": "1",
                                            "DEPLOYCTL": f"{sys.executable} -m deployctl", "NO_COLOR": "1",
                                            "DEPLOYCTL_STATE_DIR": str(tmp_path / "state"),
                                            "JUNIT_XML": str(tmp_path / "verify.xml"), **env})


def test_the_local_cloud_job_runs_green(tmp_path):
    """The whole local-cloud job of docs/ci.md, as CI runs it on a fresh local cloud: validate, doctor (its
    warnings, the pending migrations, do not fail the job), migrate, deploy, verify (JUnit)."""
    proc = run_script(tmp_path, timeout=300)
    try:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        groups = re.findall(r"^::group::deployctl (.*)$", proc.stdout, re.MULTILINE)
        assert [g.split(" --junit-xml")[0] for g in groups] == [
            "local up", "config validate", "doctor", "--yes migrate --all", "--yes deploy --all", "verify --all"], groups
        doctor = proc.stdout.split("::group::deployctl doctor", 1)[1].split("::endgroup::", 1)[0]
        assert re.search(r"\b[1-9]\d* warnings?\b", doctor), doctor[-2000:]  # it exited 3, and the job went on
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
    assert proc.returncode == 2, proc.stdout + proc.stderr  # the first step: bad usage, the job stops there
    assert "::group::deployctl local up" in proc.stdout and "config validate" not in proc.stdout
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


def _deployctl_steps(commands: list[str]) -> list[tuple[str, ...]]:
    """The deployctl invocations of a job, normalised: no path to the executable, the report path a token."""
    out = []
    for command in commands:
        words = shlex.split(command.split(ACCEPTS_WARNINGS)[0], comments=True)
        if not words or not words[0].endswith("deployctl") or words[1:2] == ["local"] or words[1:3] == [
                "--yes", "local"]:
            continue  # starting and stopping the local cloud: the local job's own steps
        words = words[1:]
        if "--junit-xml" in words:
            words[words.index("--junit-xml") + 1] = "REPORT"
        out.append(tuple(words))
    return out


def test_both_ci_jobs_run_the_same_deployctl_steps():
    """docs/ci.md's two workflows (parsed as YAML) and scripts/ci-local-cloud: the same deployctl steps in the
    same order, and each job's doctor step accepts exit 3 (warnings) and nothing else."""
    text = (ROOT / "docs" / "ci.md").read_text("utf-8")
    workflows = [yaml.safe_load(block) for block in re.findall(r"```yaml\n(.*?)```", text, re.DOTALL)]
    jobs = {wf["name"]: [step["run"] for job in wf["jobs"].values() for step in job["steps"] if "run" in step]
            for wf in workflows}
    assert set(jobs) == {"deploy-dev", "local-cloud"}, set(jobs)
    script = (ROOT / "scripts" / "ci-local-cloud").read_text("utf-8")
    jobs["scripts/ci-local-cloud"] = [f"deployctl {line[5:]}" for line in script.splitlines()
                                      if line.startswith("step ")]
    steps = {name: _deployctl_steps(runs) for name, runs in jobs.items()}
    expected = [("config", "validate"), ("doctor",), ("--yes", "migrate", "--all"), ("--yes", "deploy", "--all"),
                ("verify", "--all", "--junit-xml", "REPORT")]
    # the one difference: against Google the database is on a private IP, so doctor probes it inside the VPC
    assert ("doctor", "--in-vpc") in steps["deploy-dev"], steps["deploy-dev"]
    steps["deploy-dev"] = [("doctor",) if s == ("doctor", "--in-vpc") else s for s in steps["deploy-dev"]]
    for name, found in steps.items():
        assert found == expected, (name, found)
        doctor = [r for r in jobs[name] if re.search(r"deployctl doctor\b", r)]
        assert len(doctor) == 1 and ACCEPTS_WARNINGS in doctor[0], (name, doctor)


def test_the_google_job_can_pass_doctor_from_a_hosted_runner():
    """A GitHub-hosted runner reaches neither a private-IP database nor a state file on someone's machine, and
    doctor's admin reads need more than the Cloud SQL client role (review 2, trust finding 5)."""
    from typer.testing import CliRunner

    from deployctl.cli.main import app

    text = (ROOT / "docs" / "ci.md").read_text("utf-8")
    assert "deployctl doctor --in-vpc || [ $? -eq 3 ]" in text
    assert "--in-vpc" in CliRunner().invoke(app, ["doctor", "--help"], env={"COLUMNS": "200"}).output
    assert 'terraform_state_command = "terraform -chdir=infra state pull"' in text
    assert "hashicorp/setup-terraform" in text and "terraform -chdir=infra init" in text
    assert "roles/cloudsql.viewer" in text and "roles/cloudsql.client" in text


def test_the_ci_doc_shows_both_jobs_and_completion():
    text = (ROOT / "docs" / "ci.md").read_text("utf-8")
    for needle in ("google-github-actions/auth", "workload_identity_provider", "deployctl doctor",
                   "deployctl migrate", "deployctl deploy", "scripts/ci-local-cloud", "bash scripts/bootstrap",
                   "deployctl verify --all --junit-xml", "--install-completion", "--show-completion",
                   "fails a step on any non-zero exit, 3 included"):
        assert needle in text, needle
