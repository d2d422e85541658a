"""The database probe doctor runs inside the VPC (`deployctl doctor --in-vpc`), as a Cloud Run Job from the
service's own image:

    python -m deployctl.checks.vpcprobe --host 10.20.0.3 --port 5432 --database db --user u --sslmode require
        [--sslrootcert certs/server-ca.pem]

Candidate passwords arrive as secret-backed environment variables DEPLOYCTL_PROBE_PW_<LABEL> (never plain env),
or DEPLOYCTL_PROBE_URLPW_<LABEL> for a connection string whose password is the candidate; the stored connection
string as DEPLOYCTL_PROBE_URL. It prints one line, MARKER + JSON, with what each login did (accepted or the
SQLSTATE diagnosis) and never a value.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

MARKER = "deployctl-vpcprobe-result "
PREFIX = "DEPLOYCTL_PROBE_PW_"
URL_PREFIX = "DEPLOYCTL_PROBE_URLPW_"


def env_name(label: str, *, in_url: bool = False) -> str:
    return (URL_PREFIX if in_url else PREFIX) + label.upper().replace("-", "_")


def label_of(name: str) -> str:
    prefix = URL_PREFIX if name.startswith(URL_PREFIX) else PREFIX
    return name[len(prefix):].lower().replace("_", "-")


def main(argv: list[str] | None = None) -> int:
    from deployctl import redact
    from deployctl.checks import dbprobe

    p = argparse.ArgumentParser(prog="python -m deployctl.checks.vpcprobe")
    for name in ("host", "database", "user"):
        p.add_argument(f"--{name}", required=True)
    p.add_argument("--port", type=int, default=5432)
    p.add_argument("--sslmode", default="require")
    p.add_argument("--sslrootcert", default=None)
    p.add_argument("--timeout", type=float, default=5.0)
    p.add_argument("--main", default="secret-latest")
    a = p.parse_args(argv)
    candidates = {}
    for name, value in os.environ.items():
        if name.startswith(URL_PREFIX):
            from deployctl.checks.facts import password_in_url

            password = password_in_url(value)
            if password is not None:
                candidates[label_of(name)] = password
        elif name.startswith(PREFIX):
            redact.register(value)
            candidates[label_of(name)] = value
            if value.endswith(("\n", "\r")):
                candidates[label_of(name) + "-stripped"] = value.rstrip("\r\n")
    stored = os.environ.get("DEPLOYCTL_PROBE_URL")
    if stored:
        from deployctl.dbtarget import register_url

        register_url(stored)  # with the pieces a parser may cut a mis-encoded password into
    target = {"host": a.host, "port": a.port, "database": a.database, "user": a.user, "sslmode": a.sslmode,
              "sslrootcert": a.sslrootcert}
    result = dbprobe.run_all(target, candidates, a.main, a.timeout, stored_url=stored)
    print(MARKER + redact.redact(json.dumps(result)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
