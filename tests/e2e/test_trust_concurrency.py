"""Concurrency: two deploys of one service never lose an update silently; two `local up` start one emulator."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.e2e.conftest import ROOT, Cli
from tests.e2e.test_deploy_cli import GATE, cli_for, service


def test_two_concurrent_deploys_of_one_service(local_cloud, tmp_path):
    name = "e2ec-race"
    base = cli_for(local_cloud, tmp_path / "base", service(name, env='RUN = "base"'))
    assert (first := base("deploy", name, "--no-status", *GATE)).code == 0, first.output
    a = cli_for(local_cloud, tmp_path / "a", service(name, env='RUN = "a"'))
    b = cli_for(local_cloud, tmp_path / "b", service(name, env='RUN = "b"'))
    with ThreadPoolExecutor(2) as pool:  # two processes started together, as two engineers (or CI jobs) would
        fa, fb = (pool.submit(cli, "deploy", name, "--no-status", *GATE) for cli in (a, b))
        runs = {"a": fa.result(), "b": fb.result()}
    winners = [k for k, r in runs.items() if r.code == 0]
    assert winners, {k: r.output for k, r in runs.items()}
    for r in runs.values():
        assert "Traceback" not in r.output and "unexpected error" not in r.output, r.output
        if r.code != 0:
            assert r.code == 1 and "conflict" in r.output.lower(), r.output
    # What serves is the config of a run that reported success: never a silent mix or a lost update.
    env = _serving_env(local_cloud, name)
    assert env["RUN"] in winners, (env, {k: r.output for k, r in runs.items()})


def _serving_env(local_cloud: Cli, name: str) -> dict[str, str]:
    """The env of the revision that takes 100% of traffic, read through the real Cloud Run client."""
    code = f"""
import json, os
from deployctl.cloud.clients import Clients
from deployctl.cloud.run import RunServices
c = Clients(emulator_host=os.environ["HOST"])
run = RunServices(c, "deployctl-local", "us-central1")
svc = run.get({name!r})
[rev] = [t.revision for t in svc.traffic if t.percent == 100]
print(json.dumps(run.revision({name!r}, rev).env))
"""
    info = json.loads((local_cloud.state_dir / "emulator.json").read_text())
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=str(ROOT),
                         env={**os.environ, "HOST": info["grpc"]})
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_two_local_up_at_once_start_one_emulator(tmp_path):
    state = tmp_path / "fresh"
    cli = Cli(state)
    try:
        with ThreadPoolExecutor(2) as pool:
            runs = list(pool.map(lambda _: cli("local", "up", timeout=240), range(2)))
        for r in runs:
            assert r.code == 0, r.output
        endpoint = json.loads((state / "emulator.json").read_text())
        emulators = [p for p in Path("/proc").iterdir() if p.name.isdigit() and _is_emulator_for(p, state)]
        assert len(emulators) == 1, emulators
        assert int(emulators[0].name) == endpoint["pid"]
    finally:
        down = cli("--yes", "local", "down", "--purge", timeout=120)
        assert down.code == 0, down.output


def _is_emulator_for(proc: Path, state: Path) -> bool:
    try:
        cmdline = (proc / "cmdline").read_bytes().split(b"\0")
        environ = (proc / "environ").read_bytes()
    except OSError:
        return False
    text = b" ".join(cmdline)
    return b"deployctl.emulator" in text and (str(state).encode() in text or str(state).encode() in environ)
