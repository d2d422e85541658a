"""`doctor --in-vpc`: run deployctl.checks.vpcprobe as a Cloud Run Job (`<service>-doctor`) from the service's
own image, with the service's VPC connector and the candidate passwords as secret references, and read its JSON
answer back from the job's logs."""

from __future__ import annotations

import json

from deployctl.checks.vpcprobe import MARKER, env_name
from deployctl.errors import CloudError

JOB = "{service}-doctor"


def run(f, service: str, t, candidates) -> dict:
    from deployctl.cloud.logs import job_filter, tail
    from deployctl.cloud.run import ContainerSpec

    ctx = f.ctx
    svc_cfg = ctx.config.services[service]
    try:
        deployed = f.deployed(service)
    except CloudError:
        deployed = None
    image = deployed.image if deployed and deployed.image else svc_cfg.image
    secrets = {env_name(c.label): c.secret_ref for c in candidates if c.secret_ref}
    if t.url_secret:
        secrets["DEPLOYCTL_PROBE_URL"] = f"{t.url_secret}:latest"
    args = ["--host", t.host, "--port", str(t.port), "--database", t.database, "--user", t.user,
            "--sslmode", t.ssl, "--timeout", f"{f.probe_timeout:g}"]
    spec = ContainerSpec(image=image, command=["python", "-m", "deployctl.checks.vpcprobe"], args=args,
                         secrets=secrets, vpc_connector=ctx.config.vpc_connector_for(service),
                         egress=ctx.config.network.egress, labels={"managed-by": "deployctl", "purpose": "doctor"},
                         service_account=svc_cfg.service_account)
    job_id = JOB.format(service=service)
    ctx.progress(service, f"running the database probe inside the VPC as job {job_id}", detail=True)
    f.run_jobs.apply(job_id, spec, timeout_s=int(f.probe_timeout * 6 + 30))
    execution = f.run_jobs.run(job_id, deadline=f.probe_timeout * 6 + 90)
    lines = tail(ctx.clients, ctx.project, job_filter(job_id, execution=execution.id), limit=50)
    for line in reversed(lines):
        if line.text.startswith(MARKER):
            result = json.loads(line.text[len(MARKER):])
            result["via_job"] = execution.id
            return result
    raise CloudError(f"the probe job {job_id} ({execution.id}) left no result in its logs: {execution.message}",
                     hint="read its logs; the image must contain deployctl (python -m deployctl.checks.vpcprobe)")
