"""Each secret a service references: it exists, has an enabled version, is readable, has no trailing newline."""

from __future__ import annotations

from deployctl.checks.engine import Outcome, failed, passed, warned
from deployctl.checks.facts import Facts
from deployctl.errors import CloudError, NotFound


def referenced(f: Facts, service: str) -> dict[str, str]:
    """secret id -> the version the config asks for ("latest" or a number), for one service."""
    svc = f.ctx.config.services[service]
    out: dict[str, str] = {}
    for ref in svc.secrets.values():
        sid, _, version = ref.partition(":")
        out[sid] = version or "latest"
    if svc.database:
        out.setdefault(svc.database.password_secret, "latest")
        if svc.database.url_secret:
            out.setdefault(svc.database.url_secret, "latest")
    return out


def config_ref(f: Facts, service: str, secret_id: str) -> str:
    """The config entry that names `secret_id` for `service` (e.g. services.api.secrets.KEY)."""
    svc = f.ctx.config.services[service]
    for env_name, ref in svc.secrets.items():
        if ref.partition(":")[0] == secret_id:
            return f"services.{service}.secrets.{env_name}"
    if svc.database and svc.database.url_secret == secret_id:
        return f"services.{service}.database.url_secret"
    return f"services.{service}.database.password_secret"


def secret_ok(f: Facts, service: str, secret_id: str, version: str) -> Outcome:
    set_cmd = f"deployctl secrets set {secret_id} --from-file FILE"
    try:
        versions = f.versions(secret_id)
    except NotFound:
        return failed(f"secret {secret_id} does not exist (referred to by {config_ref(f, service, secret_id)})",
                      f"create it: {set_cmd}, or correct {config_ref(f, service, secret_id)}")
    enabled = [v for v in versions if v.state == "ENABLED"]
    if not enabled:
        return failed(f"secret {secret_id} has no enabled version ({len(versions)} versions, none enabled)",
                      f"enable one (gcloud secrets versions enable N --secret {secret_id}) or add one: {set_cmd}")
    if version != "latest" and not any(str(v.number) == version for v in enabled):
        return failed(f"the config pins {secret_id}:{version}, which is not an enabled version",
                      f"pin an enabled version (newest: {enabled[0].number}) or 'latest'")
    try:
        value = f.secret(secret_id, version)
    except CloudError as e:
        return failed(f"secret {secret_id} is not readable: {e.message}", e.hint or "")
    evidence = [f"v{value.version} {value.fingerprint}, {len(enabled)} enabled of {len(versions)}"]
    if value.has_trailing_newline:
        # DESIGN §6: detect and warn. deployctl.runtime ignores it; where it matters (a password that the database
        # then rejects), db.login and db.passwords fail.
        return warned(f"version {value.version} of {secret_id} ends with a newline (typical of "
                      "`versions add --data-file` after echo): everything but deployctl.runtime takes it as part "
                      "of the value", f"store it without the newline: printf '%s' VALUE | {set_cmd.replace(' --from-file FILE', '')}"
                      " (or deployctl doctor --fix)", evidence, fix="strip-newline",
                      fix_args={"secret": secret_id})
    if not value.data:
        return warned(f"version {value.version} of {secret_id} is empty", set_cmd, evidence)
    return passed(f"{secret_id}: v{value.version} enabled and readable", evidence)
