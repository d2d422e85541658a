"""Config models beyond what the CLI tests cover: overrides and references."""

from __future__ import annotations

from pathlib import Path

import pytest

from deployctl import config
from deployctl.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def test_image_overrides_apply_to_the_named_service_only():
    cfg = config.load(ROOT / "configs", "dev")
    new = cfg.with_images(["fiat-gateway=us-central1-docker.pkg.dev/acme-dev/services/fiat-gateway:9.9.9"])
    assert new.services["fiat-gateway"].image.endswith(":9.9.9")
    assert new.services["api-key-service"].image == cfg.services["api-key-service"].image
    assert cfg.services["fiat-gateway"].image.endswith(":1.2.0"), "the loaded config is not mutated"
    assert new.path == cfg.path and new.name == "dev"


@pytest.mark.parametrize("bad, expect", [("fiat-gateway", "SERVICE=IMAGE"), ("fiat-gateway=", "SERVICE=IMAGE"),
                                         ("fiat-gateway=a b", "SERVICE=IMAGE"), ("nope=img", "no service 'nope'")])
def test_bad_image_overrides_are_config_errors(bad, expect):
    cfg = config.load(ROOT / "configs", "dev")
    with pytest.raises(ConfigError) as exc:
        cfg.with_images([bad])
    assert expect in exc.value.message


def test_terraform_state_and_command_are_exclusive(tmp_path):
    text = ('[environment]\nproject = "acme-dev"\nregion = "us-central1"\nterraform_state = "a.tfstate"\n'
            'terraform_state_command = "terraform state pull"\n')
    with pytest.raises(ConfigError) as exc:
        config.parse(text, path=tmp_path / "x.toml", env="x")
    assert "not both" in exc.value.message


def test_pieces_env_carries_iam_auth_for_the_connector(tmp_path):
    from deployctl import runtime
    from deployctl.dbtarget import DatabaseTarget, pieces_env

    target = DatabaseTarget(service="s", instance_key="core", instance_name="core-pg",
                            connection_name="acme-dev:us-central1:core-pg", host=None, configured_ip=None, port=5432,
                            database="d", user="svc@acme-dev.iam", password_secret="p", url_secret=None,
                            ssl="require", driver="pg8000", mode="connector", ip_type="private", iam_auth=True)
    env = pieces_env(target)
    assert env["DB_IAM_AUTH"] == "true" and "DB_HOST" not in env
    spec = runtime.connector_spec(runtime.database_url_from_env(env))
    assert spec["iam_auth"] is True and spec["instance_connection_name"] == "acme-dev:us-central1:core-pg"


INSTANCE = '[instances.core]\nconnection_name = "acme-dev:us-central1:core-pg"\nprivate_ip = "10.20.0.3"\n'
ENV = '[environment]\nproject = "acme-dev"\nregion = "us-central1"\n'


@pytest.mark.parametrize("mode", ["verify-ca", "verify-full"])
def test_verify_modes_need_the_server_ca(tmp_path, mode):
    with pytest.raises(ConfigError) as exc:
        config.parse(ENV + INSTANCE + f'ssl = "{mode}"\n', path=tmp_path / "x.toml", env="x")
    assert "instances.core" in exc.value.message and "needs server_ca" in exc.value.message
    cfg = config.parse(ENV + INSTANCE + f'ssl = "{mode}"\nserver_ca = "certs/core-ca.pem"\n',
                       path=tmp_path / "x.toml", env="x")
    assert cfg.instances["core"].server_ca == Path("certs/core-ca.pem")
    assert cfg.resolve(cfg.instances["core"].server_ca).is_absolute()


def test_a_bad_ip_is_named_without_repeating_the_value(tmp_path):
    with pytest.raises(ConfigError) as exc:
        config.parse(ENV + INSTANCE.replace("10.20.0.3", "hunter2-pasted") , path=tmp_path / "x.toml", env="x")
    assert "instances.core.private_ip: is not an IPv4 or IPv6 address" in exc.value.message
    assert "hunter2" not in exc.value.message


def test_toml_native_types_and_paths_still_load(tmp_path):
    text = (ENV.replace('"us-central1"\n', '"us-central1"\nemulator = true\ndeploy_timeout = 60\n'
                        'terraform_state = "infra/dev.tfstate"\n')
            + '[services.web]\nimage = "x"\nport = 9000\n[services.web.startup_probe]\ntimeout = 3\n')
    cfg = config.parse(text, path=tmp_path / "configs" / "x.toml", env="x")
    assert cfg.environment.deploy_timeout == 60.0 and cfg.environment.emulator is True
    assert cfg.environment.terraform_state == Path("infra/dev.tfstate")
    assert cfg.services["web"].port == 9000 and cfg.services["web"].startup_probe.timeout == 3.0
    assert (cfg.name, cfg.path, cfg.root) == ("x", (tmp_path / "configs" / "x.toml").resolve(), tmp_path.resolve())
    assert "name" not in cfg.model_dump() and "root" not in cfg.model_dump()


@pytest.mark.parametrize("env", ["local", "dev"])
def test_the_shipped_configs_validate_without_warnings_and_show_their_urls(env):
    """API_KEY_SERVICE_URL is the api-key service's URL (${service:...}), not an API key."""
    from deployctl import redact
    from deployctl.commands import config as config_cmd
    from deployctl.context import Context

    ctx = Context(env=env, config_dir=ROOT / "configs")
    assert config_cmd.validate(ctx).warnings == []
    shown = config_cmd.show(ctx).config["services"]["fiat-gateway"]["env"]
    assert shown["API_KEY_SERVICE_URL"] == "${service:api-key-service}"
    assert redact.redact("${service:api-key-service}") == "${service:api-key-service}"


@pytest.mark.parametrize("name, secret", [
    ("API_KEY_SERVICE_URL", False), ("KEY_ID", False), ("LOG_LEVEL", False), ("CROSS_CHAIN_URL", False),
    ("TOKENIZER", False), ("KEY_FILE", False), ("API_KEY", True), ("SIGNING_KEY", True), ("KEY", True),
    ("APIKEY", True), ("PRIVATE_KEY_PEM", True), ("DB_PASSWORD", True), ("github_token", True),
    ("READONLY_DATABASE_URL", True), ("DSN", True), ("CLIENT_SECRET", True)])
def test_secret_names_are_read_by_their_words(name, secret):
    from deployctl.commands.config import secret_name

    assert secret_name(name) is secret


def test_a_secret_named_value_is_flagged_unless_it_is_a_plain_url(tmp_path):
    from deployctl.commands import config as config_cmd
    from deployctl.context import Context

    text = ('[environment]\nproject = "acme-dev"\nregion = "us-central1"\n[services.web]\nimage = "x"\n'
            '[services.web.env]\nAPI_KEY = "k-123456789"\nTOKEN_URL = "https://auth.example.com/token"\n'
            'AUTH_TOKEN = "https://auth.example.com/t?token=abcdef123"\n')
    (tmp_path / "t.toml").write_text(text)
    fields = {w.field for w in config_cmd.validate(Context(env="t", config_dir=tmp_path)).warnings}
    assert fields == {"services.web.env.API_KEY", "services.web.env.AUTH_TOKEN"}
