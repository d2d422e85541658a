"""The path to the database: the configured private IP is the instance's, the service and its migration job
have a VPC connector when they use a private IP, and the address answers on TCP within the timeout."""

from __future__ import annotations

import ipaddress

from deployctl.checks.engine import Outcome, failed, passed, skipped, warned
from deployctl.checks.facts import MIGRATE_JOB, Facts
from deployctl.errors import CloudError


def address_problem(f: Facts, service: str) -> str | None:
    """Why the address deployctl would build a connection string with is not the instance's (what net.private-ip
    fails on), or None: nothing is rebuilt from the config while it says so."""
    t = f.target(service)
    if t.mode == "connector":
        return None
    try:
        live = f.instance(t.instance_name)
    except CloudError as e:
        return f"the instance {t.instance_name} could not be read ({e.message})"
    actual = f.instance_ip(service)
    if live.state != "RUNNABLE":
        return f"instance {t.instance_name} is {live.state}"
    if t.configured_ip is not None and actual and t.configured_ip != actual:
        return (f"the config says instance {t.instance_name} is at {t.configured_ip}, but its {t.ip_type} IP is "
                f"{actual}")
    return None


def private_ip(f: Facts, service: str) -> Outcome:
    t = f.target(service)
    if t.mode == "connector":
        return skipped("the service connects through the Cloud SQL connector (no IP in its config)")
    live = f.instance(t.instance_name)
    actual = f.instance_ip(service)
    problem = address_problem(f, service)
    if live.state != "RUNNABLE":
        return failed(problem, f"gcloud sql instances describe {live.name}")
    if problem:
        return failed(f"{problem}: connections go nowhere (or to another instance)",
                      f"set private_ip = \"{actual}\" in [instances.{t.instance_key}] of {f.ctx.config.path}",
                      [f"admin API: {actual}", f"config: {t.configured_ip}"])
    if t.configured_ip is None:
        return passed(f"the config leaves the IP to the admin API: {actual}")
    return passed(f"private IP {t.configured_ip} is the instance's")


def _is_private(host: str | None) -> bool:
    try:
        return bool(host) and ipaddress.ip_address(host).is_private
    except ValueError:
        return False


def vpc_connector(f: Facts, service: str) -> Outcome:
    t = f.target(service)
    if t.mode == "connector" and t.ip_type != "private":
        return skipped("the service does not use a private IP")
    if t.mode == "direct" and not _is_private(t.host):
        return skipped(f"{t.host} is not a private address")
    configured = f.ctx.config.vpc_connector_for(service)
    if not configured:
        return failed(f"{service} reaches its database at private IP {t.host} but has no VPC connector: from Cloud "
                      "Run the connection times out",
                      f"set vpc_connector in [network] (or [services.{service}]) of {f.ctx.config.path}, then "
                      f"deployctl deploy {service}")
    evidence = [f"config: {configured}"]
    problems = []
    try:
        svc = f.deployed(service)
        job = f.migrate_job(service)
    except CloudError as e:
        return warned(f"config has a connector; the deployed service could not be read: {e.message}", e.hint or "",
                      evidence)
    for kind, name, thing in (("service", service, svc), ("migration job", MIGRATE_JOB.format(service=service), job)):
        if thing is None:
            continue
        deployed = _connector_of(thing)
        evidence.append(f"{kind} {name}: {deployed or 'no connector'}")
        if not deployed:
            problems.append(f"the deployed {kind} {name} has no VPC connector")
        elif deployed.rsplit("/", 1)[-1] != configured.rsplit("/", 1)[-1]:
            problems.append(f"the deployed {kind} {name} uses connector {deployed}, the config {configured}")
    if problems:
        return failed("; ".join(problems), f"deployctl deploy {service}", evidence)
    return passed("VPC connector configured" + (" and deployed" if len(evidence) > 1 else ""), evidence)


def _connector_of(thing) -> str | None:
    """The deployed VPC connector of a cloud.run Service (its template spec) or a cloud.run_jobs Job."""
    spec = getattr(thing, "spec", None)
    if spec is not None:
        return spec.vpc_connector or None
    return getattr(thing, "vpc_connector", None) or None


def tcp(f: Facts, service: str) -> Outcome:
    t = f.target(service)
    if not t.host:
        return failed(f"no {t.ip_type} IP known for instance {t.instance_name}",
                      f"set private_ip in [instances.{t.instance_key}]")
    result = f.tcp(service)
    where = f"{t.host}:{t.port}" + (" (from inside the VPC)" if f.in_vpc else "")
    if result["ok"]:
        return passed(f"{where} answers ({result['elapsed'] * 1000:.0f} ms)")
    if result.get("error") == "timeout":
        cause = f"{where}: no answer within {f.probe_timeout:g}s"
    else:
        cause = f"{where}: {result.get('error', 'unreachable')}"
    hint = ("compare the private IP with the instance's (net.private-ip) and the VPC connector; "
            + ("" if f.in_vpc else f"if the database is only reachable inside the VPC: deployctl doctor {service} "
               "--in-vpc"))
    return failed(cause + " (network: wrong IP, no VPC connector, firewall, or the instance is down)", hint)

