"""`doctor --in-vpc`: run deployctl.checks.vpcprobe as a Cloud Run Job (`<service>-doctor`) from the service's
own image, with the service's VPC connector and the candidate passwords as secret references (a connection
string's version for those inside one), and read its JSON answer back from the job's logs (waiting briefly:
Cloud Logging lags). A candidate with no Secret Manager version (Terraform's, usually) cannot be passed: it is
"not tried", and the diagnosis says so."""

from __future__ import annotations

import json

from deployctl.checks.vpcprobe import MARKER, env_name
from deployctl.errors import CloudError

JOB = "{service}-doctor"
APPLY_BUDGET = 60.0  # seconds to create or update the job


def run_deadline(probe_timeout: float) -> float:
    return probe_timeout * 6 + 90


def budget(probe_timeout: float) -> float:
    """The db checks' timeout with --in-vpc: the job applied, run to its deadline, its logs settled, a margin;
    so a slow job is reported by the job's own deadline (with its execution) rather than by the engine."""
    from deployctl.migration.job_runner import LOG_SETTLE

    return APPLY_BUDGET + run_deadline(probe_timeout) + LOG_SETTLE + 10


def run(f, service: str, t, candidates) -> dict:
    from deployctl.cloud.run import ContainerSpec
    from deployctl.migration.job_runner import LogFollower

    ctx = f.ctx
    svc_cfg = ctx.config.services[service]
    try:
        deployed = f.deployed(service)
    except CloudError:
        deployed = None
    image = deployed.image if deployed and deployed.image else svc_cfg.image
    secrets = {env_name(c.label, in_url=c.in_url): c.secret_ref for c in candidates if c.secret_ref}
    if t.url_secret:
        secrets["DEPLOYCTL_PROBE_URL"] = f"{t.url_secret}:latest"
    args = ["--host", t.host, "--port", str(t.port), "--database", t.database, "--user", t.user,
            "--sslmode", t.ssl, "--timeout", f"{f.probe_timeout:g}"]
    if t.server_ca:
        args += ["--sslrootcert", t.server_ca]  # as configured: relative to the image's WORKDIR, the project root
    spec = ContainerSpec(image=image, command=["python", "-m", "deployctl.checks.vpcprobe"], args=args,
                         secrets=secrets, vpc_connector=ctx.config.vpc_connector_for(service),
                         egress=ctx.config.network.egress, labels={"managed-by": "deployctl", "purpose": "doctor"},
                         service_account=ctx.config.service_account_for(service))
    job_id = JOB.format(service=service)
    ctx.progress(service, f"running the database probe inside the VPC as job {job_id}", detail=True)
    f.run_jobs.apply(job_id, spec, timeout_s=int(f.probe_timeout * 6 + 30))
    execution = f.run_jobs.run(job_id, deadline=run_deadline(f.probe_timeout))
    lines = LogFollower(ctx, service, job_id).settle(
        execution.id, failed=not execution.succeeded, until=lambda got: any(x.startswith(MARKER) for x in got))
    for line in reversed(lines):
        if line.startswith(MARKER):
            result = json.loads(line[len(MARKER):])
            result["via_job"] = execution.id
            return result
    raise CloudError(f"the probe job {job_id} ({execution.id}) left no result in its logs: {execution.message}",
                     hint="read its logs; the image must contain deployctl (python -m deployctl.checks.vpcprobe)")
