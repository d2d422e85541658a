"""deployctl's benchmarks: each measures deployctl side by side with a baseline, interleaved, in one run, and
records the medians and their ratio in bench/RESULTS.md (and bench/results.json). Not a test: nothing here
asserts a time. RESULTS.md always holds one run only: running a subset writes a file that says so.

    .venv/bin/python bench/bench.py            # every benchmark (a few minutes)
    .venv/bin/python bench/bench.py startup    # one
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "RESULTS.md"
RAW = ROOT / "bench" / "results.json"
BENCHMARKS: dict[str, Callable[[], dict]] = {}


def benchmark(name: str):
    def register(fn):
        BENCHMARKS[name] = fn
        return fn
    return register


def timed(cmd: list[str], *, env: dict | None = None, runs: int = 7, cwd: Path = ROOT) -> list[float]:
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True, env={**os.environ, **(env or {})}, cwd=cwd)
        out.append(time.perf_counter() - t)
    return out


BARE_TYPER = """
import typer
app = typer.Typer()
@app.command()
def hello(name: str = "x") -> None:
    print(name)
app()
"""


@benchmark("startup")
def startup() -> dict:
    """`deployctl --help` against a bare Typer app with one command (both: a fresh interpreter)."""
    bare, ours = [], []
    for _ in range(7):  # interleaved, so a busy moment of the machine hits both alike
        bare += timed([sys.executable, "-c", BARE_TYPER, "--help"], runs=1)
        ours += timed([sys.executable, "-m", "deployctl", "--help"], runs=1)
    return {"title": "CLI start-up: `deployctl --help` vs a bare Typer app",
            "baseline": statistics.median(bare), "deployctl": statistics.median(ours),
            "unit": "s", "runs": len(ours)}


@benchmark("local-up")
def local_up() -> dict:
    """Cold `deployctl local up` (emulator + cluster + provisioning) against a bare initdb + pg_ctl start."""
    sys.path.insert(0, str(ROOT))
    from deployctl.emulator.netaddr import allocate_private_ip
    from deployctl.emulator.postgres import Cluster, cluster_base

    bare, ours = [], []
    for _ in range(3):
        with tempfile.TemporaryDirectory() as tmp:
            c = Cluster(cluster_base(tmp) / "bench", host=allocate_private_ip((5432,)), port=5432,
                        superuser_password="bench-password")
            t = time.perf_counter()
            c.init()
            c.start()
            bare.append(time.perf_counter() - t)
            c.destroy()
            with contextlib.suppress(OSError):
                c.data_dir.parent.rmdir()  # the cluster base lives outside tmp (/var/tmp): leave nothing there
        with tempfile.TemporaryDirectory() as tmp:
            env = {"DEPLOYCTL_STATE_DIR": tmp, "CI": "true"}
            ours += timed([sys.executable, "-m", "deployctl", "local", "up"], env=env, runs=1)
            subprocess.run([sys.executable, "-m", "deployctl", "--yes", "local", "down", "--purge"],
                           env={**os.environ, **env}, capture_output=True, cwd=ROOT)
    return {"title": "Cold `deployctl local up` vs bare `initdb` + `pg_ctl start`",
            "baseline": statistics.median(bare), "deployctl": statistics.median(ours), "unit": "s",
            "runs": len(ours)}


def _names(prefix: str, count: int) -> list[str]:
    return [f"{prefix}-{i:02d}" for i in range(count)]


def _fleet(tmp: Path, count: int, prefix: str, *more: tuple[str, int]) -> Path:
    """A config dir declaring `count` services named prefix-NN (and more groups) that each run
    bench/slow_health.py (300 ms per answer)."""
    config_dir = tmp / "configs"
    config_dir.mkdir(parents=True, exist_ok=True)
    text = ('[environment]\nproject = "deployctl-bench"\nregion = "us-central1"\nemulator = true\n')
    for group, n in ((prefix, count), *more):
        for name in _names(group, n):
            text += (f'\n[services.{name}]\nimage = "local/bench:dev"\n'
                     f'command = ["{sys.executable}", "{ROOT / "bench" / "slow_health.py"}"]\n'
                     'health = ["/health"]\nstartup_probe = { path = "/health", period = 1 }\n')
    (config_dir / "local.toml").write_text(text)
    return config_dir


def _deployctl(config_dir: Path, state: Path, *args: str) -> float:
    env = {**os.environ, "DEPLOYCTL_STATE_DIR": str(state), "DEPLOYCTL_CONFIG_DIR": str(config_dir), "CI": "true"}
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "deployctl", *args], check=True, capture_output=True, env=env, cwd=ROOT)
    return time.perf_counter() - t


def _down(config_dir: Path, state: Path) -> None:
    env = {**os.environ, "DEPLOYCTL_STATE_DIR": str(state), "DEPLOYCTL_CONFIG_DIR": str(config_dir), "CI": "true"}
    subprocess.run([sys.executable, "-m", "deployctl", "--yes", "local", "down", "--purge"], env=env,
                   capture_output=True, cwd=ROOT)


@benchmark("status")
def status_fan_out() -> dict:
    """`deployctl status` over 1, 5 and 20 services whose health endpoints each take 300 ms."""
    with tempfile.TemporaryDirectory() as tmp:
        state, config_dir = Path(tmp) / "state", _fleet(Path(tmp), 20, "slow")
        try:
            _deployctl(config_dir, state, "deploy", "--all", "--no-status", "--gate-successes", "1")
            names = _names("slow", 20)
            times: dict[int, list[float]] = {1: [], 5: [], 20: []}
            for _ in range(3):  # interleaved
                for n in times:
                    times[n].append(_deployctl(config_dir, state, "status", *names[:n]))
        finally:
            _down(config_dir, state)
    med = {n: statistics.median(t) for n, t in times.items()}
    return {"title": "`deployctl status`: 20 services (300 ms health each) vs 1", "baseline": med[1],
            "deployctl": med[20], "five": med[5], "unit": "s", "runs": 3}


@benchmark("deploy")
def deploy_fan_out() -> dict:
    """The first `deployctl deploy` of 6 independent services vs of 1, interleaved (1, 6, 1, 6, ...), in one
    local cloud started beforehand: each sample deploys services of its own, so every deploy is a first one."""
    groups = [(f"d{k}c{count}", count) for k in range(3) for count in (1, 6)]
    samples: dict[int, list[float]] = {1: [], 6: []}
    with tempfile.TemporaryDirectory() as tmp:
        state, config_dir = Path(tmp) / "state", _fleet(Path(tmp), 0, "none", *groups)
        try:
            _deployctl(config_dir, state, "local", "up")
            for prefix, count in groups:
                samples[count].append(_deployctl(config_dir, state, "deploy", *_names(prefix, count), "--no-status"))
        finally:
            _down(config_dir, state)
    return {"title": "`deployctl deploy`: 6 independent services vs 1", "baseline": statistics.median(samples[1]),
            "deployctl": statistics.median(samples[6]), "unit": "s", "runs": len(samples[6]),
            "samples": {str(k): v for k, v in samples.items()}}


@benchmark("doctor")
def doctor() -> dict:
    """`doctor` on a healthy three-service local cloud (every check, in process) against its slowest single
    check: the ratio shows what running independent checks concurrently buys (1.0 would be perfect)."""
    sys.path.insert(0, str(ROOT))
    from deployctl.commands.doctor import doctor as run_doctor
    from deployctl.context import Context

    with tempfile.TemporaryDirectory() as tmp:
        env = {"DEPLOYCTL_STATE_DIR": tmp, "CI": "true"}
        subprocess.run([sys.executable, "-m", "deployctl", "local", "up"], env={**os.environ, **env},
                       capture_output=True, cwd=ROOT, check=True)
        old = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            ctx = Context(config_dir=ROOT / "configs")
            run_doctor(ctx)  # warm: clients built, modules imported
            totals, slowest = [], []
            for _ in range(5):
                t = time.perf_counter()
                result = run_doctor(ctx)
                totals.append(time.perf_counter() - t)
                slowest.append(max(c.elapsed for s in result.services for c in s.checks))
        finally:
            for k, v in old.items():
                os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
            subprocess.run([sys.executable, "-m", "deployctl", "--yes", "local", "down", "--purge"],
                           env={**os.environ, **env}, capture_output=True, cwd=ROOT)
    checks = sum(len(s.checks) for s in result.services)
    return {"title": f"`doctor`, healthy 3 services ({checks} checks) vs its slowest check",
            "baseline": statistics.median(slowest), "deployctl": statistics.median(totals), "unit": "s",
            "runs": len(totals)}


@contextlib.contextmanager
def silent_database() -> Iterator[str]:
    """A private IP whose port 5432 takes connections and never answers (a black-holed database: the hard case,
    where only a timeout ends the wait; a refused or unroutable address fails at once)."""
    from deployctl.emulator.netaddr import allocate_private_ip

    host = allocate_private_ip((5432,))
    sock = socket.socket()
    sock.bind((host, 5432))
    sock.listen(64)  # the kernel completes the handshakes; nobody ever reads or answers
    try:
        yield host
    finally:
        sock.close()


def _bare_connect(host: str, timeout: float) -> float:
    """The baseline: a bare pg8000 connect to the same address with the same timeout, as a fresh process."""
    code = ("import sys, ssl, time, pg8000.native as p\nt = time.perf_counter()\n"
            "try:\n    p.Connection('probe', password='x', host=sys.argv[1], port=5432, database='postgres',\n"
            "                 timeout=float(sys.argv[2]), ssl_context=ssl.create_default_context())\n"
            "except Exception:\n    pass\n")
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", code, host, str(timeout)], capture_output=True, cwd=ROOT)
    return time.perf_counter() - t


@benchmark("doctor-unreachable")
def doctor_unreachable() -> dict:
    """`doctor --timeout 2` (a whole CLI run) when the database's private IP takes connections and never
    answers, against a bare pg8000 connect to that address with the same 2 s timeout (also a fresh
    interpreter), interleaved: the doctor run should cost about one probe timeout, not the driver's default or
    one timeout per check."""
    timeout = 2.0
    sys.path.insert(0, str(ROOT))
    with tempfile.TemporaryDirectory() as tmp, silent_database() as unreachable:
        base = Path(tmp)
        (base / "configs").mkdir()
        text = (ROOT / "configs" / "local.toml").read_text()
        (base / "configs" / "local.toml").write_text(
            text.replace('ssl = "require"', f'ssl = "require"\nprivate_ip = "{unreachable}"'))
        os.symlink(ROOT / "migrations", base / "migrations")
        env = {"DEPLOYCTL_STATE_DIR": str(base / "state"), "CI": "true", "DEPLOYCTL_CONFIG_DIR": str(base / "configs")}
        subprocess.run([sys.executable, "-m", "deployctl", "local", "up"], env={**os.environ, **env},
                       capture_output=True, cwd=ROOT, check=True)
        try:
            bare, runs = [], []
            for _ in range(3):
                bare.append(_bare_connect(unreachable, timeout))
                t = time.perf_counter()
                subprocess.run([sys.executable, "-m", "deployctl", "--timeout", str(timeout), "doctor",
                                "cross-chain-integration"], env={**os.environ, **env}, capture_output=True,
                               cwd=ROOT)
                runs.append(time.perf_counter() - t)
        finally:
            subprocess.run([sys.executable, "-m", "deployctl", "--yes", "local", "down", "--purge"],
                           env={**os.environ, **env}, capture_output=True, cwd=ROOT)
    return {"title": f"`doctor --timeout {timeout:g}` on an unreachable database vs a bare pg8000 connect with "
                     f"that timeout (both whole processes)",
            "baseline": statistics.median(bare), "deployctl": statistics.median(runs), "unit": "s", "runs": len(runs)}


def _commit() -> str:
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT)
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True,
                           cwd=ROOT).stdout.strip()
    return (out.stdout.strip() or "unknown") + (" (with uncommitted changes)" if dirty else "")


def write(results: dict[str, dict], *, complete: bool) -> None:
    """bench/RESULTS.md and results.json for this run alone (an older run's rows are never kept)."""
    commit = _commit()
    RAW.write_text(json.dumps({"commit": commit, "complete": complete, "results": results}, indent=2) + "\n")
    scope = ("every benchmark" if complete
             else f"only {', '.join(results)} (a partial run: the other benchmarks were not run)")
    lines = ["# Benchmark results", "",
             f"Commit {commit}, {time.strftime('%Y-%m-%d')}; {scope}. Machine: {platform.machine()}, "
             f"{os.cpu_count()} cores, Python {platform.python_version()}. Each row measures deployctl and its "
             "baseline side by side, interleaved, in this one run (medians of the runs shown); the ratio is what "
             "to compare across machines.", "",
             "| benchmark | baseline | deployctl | ratio | runs |", "|---|---|---|---|---|"]
    rows = []
    for r in results.values():
        rows.append(r)
        if "five" in r:  # status: the middle of the 1 / 5 / 20 curve, from the same interleaved samples
            rows.append({**r, "title": "`deployctl status`: 5 services (300 ms health each) vs 1",
                         "deployctl": r["five"]})
    for r in rows:
        ratio = r["deployctl"] / r["baseline"] if r["baseline"] else float("nan")
        lines.append(f"| {r['title']} | {r['baseline']:.3f} {r['unit']} | {r['deployctl']:.3f} {r['unit']} | "
                     f"{ratio:.2f}× | {r['runs']} |")
    RESULTS.write_text("\n".join(lines) + "\n")


def main(argv: list[str]) -> None:
    names = argv or list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        sys.exit(f"unknown benchmark(s): {', '.join(unknown)}; known: {', '.join(BENCHMARKS)}")
    results = {}
    for name in names:
        print(f"bench: {name} ...", file=sys.stderr, flush=True)
        results[name] = BENCHMARKS[name]()
        r = results[name]
        print(f"bench: {name}: baseline {r['baseline']:.3f} {r['unit']}, deployctl {r['deployctl']:.3f} "
              f"{r['unit']} ({r['deployctl'] / r['baseline']:.2f}×)", file=sys.stderr)
    write(results, complete=set(names) == set(BENCHMARKS))


if __name__ == "__main__":
    main(sys.argv[1:])
