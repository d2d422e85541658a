"""What a service runs as: its own service_account, else the environment's. The revisions, the migration job and
doctor's probe job all ask Config.service_account_for (a job that ran as the default compute account instead of
the configured one would have other permissions than the service it migrates or probes)."""

from pathlib import Path

from deployctl import config

ROOT = Path(__file__).resolve().parents[2]


def test_a_service_without_its_own_account_runs_as_the_environments():
    dev = config.load(ROOT / "configs", "dev")
    assert dev.environment.service_account == "deployctl-runtime@acme-dev.iam.gserviceaccount.com"
    for name in dev.services:
        if dev.services[name].service_account is None:
            assert dev.service_account_for(name) == dev.environment.service_account


def test_a_services_own_account_wins_and_none_anywhere_is_none():
    text = (ROOT / "configs" / "local.toml").read_text()
    local = config.parse(text, path=ROOT / "configs" / "local.toml", env="local")
    name = next(iter(local.services))
    own = local.model_copy(update={"services": {**local.services, name: local.services[name].model_copy(
        update={"service_account": "own@p.iam.gserviceaccount.com"})}})
    assert own.service_account_for(name) == "own@p.iam.gserviceaccount.com"
    assert local.environment.service_account is None and local.services[name].service_account is None
    assert local.service_account_for(name) is None  # Cloud Run's default account: nothing is sent


def test_the_migration_job_runs_as_the_services_account():
    from deployctl.context import Context
    from deployctl.dbtarget import Credential
    from deployctl.migration.job_runner import job_spec
    from deployctl.migration.tree import tree_for

    ctx = Context(env="dev", config_dir=ROOT / "configs")
    cred = Credential(url="postgresql+pg8000://u:p@10.20.0.3/db", secret="fiat-database-url", version=3, kind="url")
    spec = job_spec(ctx, "fiat-gateway", tree_for(ctx, "fiat-gateway"), cred)
    assert spec.service_account == "deployctl-runtime@acme-dev.iam.gserviceaccount.com"
    assert spec.secrets == {"DATABASE_URL": "fiat-database-url:3"}
