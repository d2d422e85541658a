"""Environment-wide checks: the configuration, the credentials (or the local cloud), the Terraform state."""

from __future__ import annotations

import os

from deployctl.checks.engine import Outcome, failed, passed, skipped, warned
from deployctl.checks.facts import Facts


def config_valid(f: Facts) -> Outcome:
    from deployctl.errors import ConfigError

    try:
        cfg = f.ctx.config
    except ConfigError as e:
        return failed(e.message, e.hint or f"deployctl --env {f.ctx.env} config validate")
    with_db = sum(1 for s in cfg.services.values() if s.database)
    return passed(f"{cfg.path}: {len(cfg.services)} services ({with_db} with a database), "
                  f"{len(cfg.instances)} instances")


def credentials(f: Facts) -> Outcome:
    """Application Default Credentials present, or the emulator reachable: one cheap call proves either."""
    ctx = f.ctx
    if not ctx.emulated:
        from deployctl.cloud.credentials import default_credentials_problem

        problem = default_credentials_problem()
        if problem:
            return failed(f"no Google credentials: {problem}",
                          "gcloud auth application-default login (or set GOOGLE_APPLICATION_CREDENTIALS)")
    try:
        f.store.list_secrets()
    except Exception as e:  # noqa: BLE001
        from deployctl.errors import DeployctlError

        if isinstance(e, DeployctlError):
            return failed(e.message, e.hint or "")
        where = os.environ.get("DEPLOYCTL_EMULATOR_HOST") or "the local cloud"
        return failed(f"cannot reach {where if ctx.emulated else 'Google Cloud'}: {type(e).__name__}",
                      "deployctl local up" if ctx.emulated else "check network access to googleapis.com")
    return passed("local cloud reachable" if ctx.emulated else "Application Default Credentials work")


def terraform_state(f: Facts) -> Outcome:
    env = f.ctx.config.environment
    if not env.terraform_state and not env.terraform_state_command and not env.emulator:
        return skipped("no terraform_state / terraform_state_command configured: one password source fewer")
    state = f.tfstate()  # a ConfigError becomes a failed check with its hint
    if not state.users and not state.databases:
        return warned(f"{state.source} holds no google_sql_user or google_sql_database",
                      "point terraform_state at the state of the stack that manages the databases")
    return passed(f"{state.source}: {len(state.users)} users, {len(state.databases)} databases, "
                  f"{len(state.secret_versions)} secret versions")
