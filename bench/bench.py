"""deployctl's benchmarks: each measures deployctl side by side with a baseline in one run, and records the
ratio in bench/RESULTS.md. Not a test: nothing here asserts a time.

    .venv/bin/python bench/bench.py            # every benchmark
    .venv/bin/python bench/bench.py startup    # one
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
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
    bare = timed([sys.executable, "-c", BARE_TYPER, "--help"])
    ours = timed([sys.executable, "-m", "deployctl", "--help"])
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
        with tempfile.TemporaryDirectory() as tmp:
            env = {"DEPLOYCTL_STATE_DIR": tmp, "CI": "true"}
            ours += timed([sys.executable, "-m", "deployctl", "local", "up"], env=env, runs=1)
            subprocess.run([sys.executable, "-m", "deployctl", "--yes", "local", "down", "--purge"],
                           env={**os.environ, **env}, capture_output=True, cwd=ROOT)
    return {"title": "Cold `deployctl local up` vs bare `initdb` + `pg_ctl start`",
            "baseline": statistics.median(bare), "deployctl": statistics.median(ours), "unit": "s",
            "runs": len(ours)}


def write(results: dict[str, dict]) -> None:
    previous = json.loads(RAW.read_text()) if RAW.exists() else {}
    previous.update(results)
    RAW.write_text(json.dumps(previous, indent=2) + "\n")
    lines = ["# Benchmark results", "",
             f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}. "
             "Each row measures deployctl and its baseline side by side in one run (medians); "
             "the ratio is what to compare across runs.", "",
             "| benchmark | baseline | deployctl | ratio | runs |", "|---|---|---|---|---|"]
    for r in previous.values():
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
    write(results)


if __name__ == "__main__":
    main(sys.argv[1:])
