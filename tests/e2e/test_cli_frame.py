"""The CLI frame: global options, exit codes, config errors, the JSON envelope, and a light --help."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.conftest import ROOT, Cli

HEAVY = ("grpc", "google", "sqlalchemy", "alembic", "pg8000", "openapi_spec_validator", "yaml")


@pytest.mark.parametrize("argv", [["--help"], ["config", "--help"], ["secrets", "--help"], ["local", "--help"]])
def test_help_imports_no_heavy_module(argv):
    code = (
        "import sys\n"
        "from deployctl.cli.main import main\n"
        f"try:\n    main({argv!r})\nexcept SystemExit as e:\n    assert e.code == 0, e.code\n"
        f"heavy = sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})\n"
        "print('HEAVY=' + ','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "HEAVY=", out.stdout.splitlines()[-1]


def _configs(tmp_path: Path, text: str | bytes) -> Cli:
    d = tmp_path / "configs"
    d.mkdir()
    (d / "bad.toml").write_bytes(text if isinstance(text, bytes) else text.encode())
    return Cli(tmp_path / "state", config_dir=d)


GOOD_ENV = '[environment]\nproject = "acme-dev"\nregion = "us-central1"\n'


@pytest.mark.parametrize("text, expect", [
    (GOOD_ENV + "bogus = 1\n", "environment.bogus: unknown key"),
    (GOOD_ENV + '[services.web]\nimage = "x"\nport = "eighty"\n', "services.web.port"),
    (GOOD_ENV + '[services.Web_1]\nimage = "x"\n', "services.Web_1 (the name)"),
    (GOOD_ENV + '[services.web]\nimage = "x"\n[services.web.database]\ninstance = "nope"\nname = "d"\n'
     'user = "u"\npassword_secret = "s"\n', "no instance 'nope'"),
    (GOOD_ENV + '[services.a]\nimage = "x"\ndepends_on = ["b"]\n[services.b]\nimage = "x"\n'
     'depends_on = ["a"]\n', "cycle"),
    ('[environment]\nproject = "acme-dev"\nproject = "again"\n', "TOML syntax error"),
    (b'[environment]\nproject = "\xff\xfe"\n', "bad.toml:2: not valid UTF-8"),
    ("[environment\n", "TOML syntax error"),
    # B12: strict types (TOML has integers, floats and booleans of its own) and no internal fields
    (GOOD_ENV + '[services.web]\nimage = "x"\nport = "8080"\n', "services.web.port: Input should be a valid integer"),
    (GOOD_ENV + '[services.web]\nimage = "x"\nmin_instances = 1.0\n',
     "services.web.min_instances: Input should be a valid integer"),
    (GOOD_ENV.replace('"us-central1"\n', '"us-central1"\nemulator = "yes"\n'),
     "environment.emulator: Input should be a valid boolean"),
    (GOOD_ENV.replace('"us-central1"\n', '"us-central1"\ndeploy_timeout = "300"\n'),
     "environment.deploy_timeout: Input should be a valid number"),
    ('name = "evil"\n' + GOOD_ENV, "name: unknown key"),
    ('root = "/"\n' + GOOD_ENV, "root: unknown key"),
    ('path = 5\n' + GOOD_ENV, "path: unknown key"),
    # ${service:NAME} in env: NAME must be a service, and in depends_on (deployed first, its URL known)
    (GOOD_ENV + '[services.web]\nimage = "x"\nenv = { API = "${service:nope}" }\n',
     "services.web.env.API: ${service:nope} names no service"),
    (GOOD_ENV + '[services.web]\nimage = "x"\nenv = { API = "${service:api}/v1" }\n[services.api]\nimage = "x"\n',
     "add 'api' to services.web.depends_on"),
])
def test_bad_config_is_exit_2_with_file_and_field(tmp_path, text, expect):
    cli = _configs(tmp_path, text)
    run = cli("--env", "bad", "config", "validate")
    assert run.code == 2, run.output
    assert expect in run.stderr
    assert "bad.toml" in run.stderr
    assert "Traceback" not in run.output
    js = cli("--env", "bad", "--json", "config", "validate")
    assert js.code == 2
    doc = json.loads(js.stdout)
    assert doc["schema"] == "deployctl/config/validate/v1" and doc["ok"] is False
    assert doc["errors"][0]["code"] == "config" and expect in doc["errors"][0]["message"]


def test_config_value_is_never_echoed_in_errors(tmp_path):
    # A password pasted into env by mistake must not be echoed by the validation error.
    cli = _configs(tmp_path, GOOD_ENV + '[services.web]\nimage = "x"\nport = "hunter2-secret-value"\n')
    run = cli("--env", "bad", "config", "validate")
    assert run.code == 2 and "hunter2-secret-value" not in run.output


SECRET_ENV = (GOOD_ENV + '[services.web]\nimage = "x"\n[services.web.env]\nDB_PASSWORD = "hunter2-in-env"\n'
              'DATABASE_URL = "postgresql://u:topsecretpw@10.0.0.1/db"\nCACHE = "redis://:cachepass99@h:6379"\n'
              'LOG_LEVEL = "info"\n')


def test_config_show_masks_secret_looking_env_and_validate_warns(tmp_path):
    """B13: a password pasted into env is masked by `config show` (human and JSON); validate says it belongs
    in Secret Manager."""
    cli = _configs(tmp_path, SECRET_ENV)
    js = cli("--env", "bad", "--json", "config", "show")
    assert js.code == 0, js.output
    env = json.loads(js.stdout)["data"]["config"]["services"]["web"]["env"]
    assert env == {"DB_PASSWORD": "***", "DATABASE_URL": "postgresql://u:***@10.0.0.1/db",
                   "CACHE": "redis://:***@h:6379", "LOG_LEVEL": "info"}
    human = cli("--env", "bad", "config", "show")
    assert human.code == 0 and "LOG_LEVEL=info" in human.stdout and "u:***@10.0.0.1" in human.stdout
    for run in (js, human):
        assert "hunter2" not in run.output and "topsecretpw" not in run.output and "cachepass99" not in run.output
    validate = cli("--env", "bad", "--json", "config", "validate")
    doc = json.loads(validate.stdout)
    assert validate.code == 0 and doc["ok"] is True
    assert {w["field"] for w in doc["data"]["warnings"]} == {"services.web.env.DB_PASSWORD",
                                                             "services.web.env.DATABASE_URL", "services.web.env.CACHE"}
    people = cli("--env", "bad", "config", "validate")
    assert "services.web.env.DB_PASSWORD: looks like a secret" in people.stderr and "secrets set" in people.stderr
    assert "hunter2" not in people.output + validate.output


def test_missing_environment_lists_the_known_ones(tmp_path):
    run = Cli(tmp_path)("--env", "nope", "config", "validate")
    assert run.code == 2
    assert "nope.toml does not exist" in run.stderr and "dev, local" in run.stderr


def test_validate_and_show_both_shipped_configs(tmp_path):
    cli = Cli(tmp_path)
    for env in ("local", "dev"):
        run = cli("--env", env, "--json", "config", "show")
        assert run.code == 0, run.output
        doc = json.loads(run.stdout)
        assert doc["schema"] == "deployctl/config/show/v1" and doc["ok"] is True
        assert set(doc["data"]["config"]["services"]) == {"fiat-gateway", "cross-chain-integration",
                                                          "api-key-service"}
    dev = json.loads(cli("--env", "dev", "--json", "config", "show").stdout)["data"]["config"]
    assert dev["services"]["api-key-service"]["database"] is None
    assert dev["instances"]["core"]["private_ip"] == "10.20.0.3"


def test_usage_error_is_exit_2(tmp_path):
    run = Cli(tmp_path)("config", "no-such-command")
    assert run.code == 2 and "Traceback" not in run.output


@pytest.mark.parametrize("argv, message", [
    (["--json", "config", "no-such-command"], "No such command 'no-such-command'"),
    (["--json", "secrets", "get"], "Missing argument"),
    (["secrets", "get", "--json"], "Missing argument"),
    (["--json", "secrets"], "deployctl secrets: a command is needed"),
    (["--json", "dsn", "--driver", "mysql"], "--driver"),
    (["--json", "--timeout", "soon", "config", "validate"], "--timeout"),
    (["--json", "--env", "", "config", "validate"], "must not be empty"),
    # inf passed the min= range checks: a deadline that never ends (a dead endpoint retried for ever). --env dev:
    # should the check go, these commands must not start a local cloud.
    (["--json", "--timeout", "inf", "config", "validate"], "'--timeout': must be a finite number of seconds"),
    (["--json", "--env", "dev", "status", "--interval", "inf"], "'--interval': must be a finite"),
    (["--json", "--env", "dev", "deploy", "--all", "--gate-deadline", "Infinity"], "'--gate-deadline': must be a"),
    (["--json", "--env", "dev", "verify", "--all", "--deadline", "inf"], "'--deadline': must be a finite"),
])
def test_usage_errors_with_json_are_an_envelope_on_stdout(argv, message, tmp_path):
    """C7: with --json, stdout holds the error envelope alone, even for Click's own usage errors."""
    run = Cli(tmp_path)(*argv)
    assert run.code == 2, run.output
    doc = json.loads(run.stdout)
    assert doc["ok"] is False and doc["errors"][0]["code"] == "usage" and doc["errors"][0]["hint"]
    assert message in doc["errors"][0]["message"] and "Traceback" not in run.output


@pytest.mark.parametrize("argv", [["--json", "migrate", "--all", "--sql"], ["migrate", "--all", "--sql", "--json"]])
def test_a_group_with_a_default_command_needs_no_command_word_with_json(argv, tmp_path):
    """`migrate SERVICE...` means `migrate run SERVICE...`; --json must not ask for a command word."""
    run = Cli(tmp_path)(*argv)
    doc = json.loads(run.stdout)
    assert run.code == 0 and doc["schema"] == "deployctl/migrate/v1", run.output
    assert "CREATE TABLE deposits" in doc["data"]["sql"]["fiat-gateway"]


@pytest.mark.parametrize("argv", [["--version"], ["local", "--version"], ["--json", "--version"],
                                  ["--version", "--json"], ["--json", "local", "--version"]])
def test_version_is_printed_with_or_without_json(argv, tmp_path):
    """`deployctl --json --version` was the usage error 'deployctl: a command is needed' (exit 2), then plain
    text on stdout; with --json it is the version envelope, as every other output."""
    from deployctl import __version__

    run = Cli(tmp_path)(*argv)
    assert run.code == 0, run.output
    if "--json" in argv:
        assert json.loads(run.stdout) == {"schema": "deployctl/version/v1", "ok": True,
                                          "data": {"version": __version__}, "errors": []}
    else:
        assert run.stdout == f"deployctl {__version__}\n"


@pytest.mark.parametrize("argv", [["--json", "status", "--watch"], ["status", "-w", "--interval", "0.5", "--json"]])
def test_status_watch_with_json_is_a_usage_error(argv, tmp_path):
    """It printed a new envelope every interval until Ctrl-C: stdout was no JSON document a program could parse.
    --env dev: no local cloud is started, whatever happens."""
    run = Cli(tmp_path)("--env", "dev", *argv, timeout=30)
    assert run.code == 2, run.output
    doc = json.loads(run.stdout)
    assert doc["schema"] == "deployctl/status/v1" and doc["ok"] is False and doc["errors"][0]["code"] == "usage"
    assert "--watch cannot go with --json" in doc["errors"][0]["message"] and doc["errors"][0]["hint"]


@pytest.mark.parametrize("argv", [["deploy", "--all", "fiat-gateway"], ["migrate", "fiat-gateway", "--all", "--sql"],
                                  ["verify", "--all", "api-key-service"]])
def test_named_services_and_all_together_are_a_usage_error(argv, tmp_path):
    """`deploy --all fiat-gateway` silently acted on the named service only. --env dev: no local cloud starts."""
    run = Cli(tmp_path)("--env", "dev", "--json", *argv)
    assert run.code == 2, run.output
    error = json.loads(run.stdout)["errors"][0]
    assert error["code"] == "usage" and error["message"] == f"name the services to {argv[0]} or pass --all, not both"
    named = next(a for a in argv[1:] if not a.startswith("-"))
    assert error["hint"] == f"deployctl {argv[0]} {named}, or deployctl {argv[0]} --all"


def test_an_empty_env_is_a_usage_error(tmp_path):
    """C8: --env "" silently meant local."""
    run = Cli(tmp_path)("--env", "", "config", "validate")
    assert run.code == 2 and "must not be empty" in run.stderr


def test_a_state_dir_that_is_a_file_is_a_usage_error(tmp_path):
    """C9: it was 'unexpected error (a bug)' with a crash log."""
    state = tmp_path / "state-file"
    state.write_text("x")
    run = Cli(state)("secrets", "list")
    assert run.code == 2, run.output
    assert f"the state directory {state} is not a directory" in run.stderr and "DEPLOYCTL_STATE_DIR" in run.stderr
    assert "bug" not in run.output


@pytest.mark.parametrize("argv", [["status"], ["local", "up"], ["--json", "secrets", "list"]])
def test_a_state_dir_that_cannot_be_made_is_a_usage_error(tmp_path, argv):
    """Below a file (or read-only, or not ours): it was 'unexpected error (a bug)' with a crash log."""
    (tmp_path / "a-file").write_text("x")
    state = tmp_path / "a-file" / "state"
    run = Cli(state)(*argv)
    assert run.code == 2, run.output
    message = f"the state directory {state} cannot be used: Not a directory"
    if "--json" in argv:
        error = json.loads(run.stdout)["errors"][0]
        assert error["code"] == "state-dir" and error["message"] == message, error
    else:
        assert run.stderr.startswith(f"error: {message}\n"), run.stderr
    assert "bug" not in run.output and "DEPLOYCTL_STATE_DIR" in run.output


def test_a_state_dir_path_the_system_refuses_is_a_usage_error(tmp_path):
    """A name too long (ENAMETOOLONG from the first stat, as a parent we may not search gives EACCES): it was
    'unexpected error (a bug)' with a crash log."""
    state = tmp_path / ("x" * 300)
    run = Cli(state)("local", "ps")
    assert run.code == 2, run.output
    assert run.stderr.startswith(f"error: the state directory {state} cannot be used: File name too long\n")
    assert "next: point DEPLOYCTL_STATE_DIR at a directory you can write" in run.stderr and "bug" not in run.output


def test_the_default_state_dir_that_cannot_be_made_says_so_without_naming_the_variable_as_set(tmp_path):
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "local.toml").write_text((ROOT / "configs" / "local.toml").read_text())
    (tmp_path / ".deployctl").write_text("x")  # the default state dir .deployctl/local lies below a file
    cli = Cli(tmp_path, config_dir=tmp_path / "configs")
    del cli.env["DEPLOYCTL_STATE_DIR"]
    run = cli("local", "up")
    assert run.code == 2, run.output
    assert "cannot be used: Not a directory" in run.stderr, run.stderr
    assert "next: make .deployctl/<env> beside the configs directory writable, or set DEPLOYCTL_STATE_DIR" in run.stderr


def test_global_options_after_the_command_work(tmp_path):
    run = Cli(tmp_path)("config", "show", "--env", "dev", "--json", "-vv")
    assert run.code == 0, run.output
    assert json.loads(run.stdout)["data"]["environment"] == "dev"


@pytest.mark.parametrize("argv, hoisted", [
    (["status", "--json"], ["--json", "status"]),
    (["deploy", "--all", "--yes"], ["--yes", "deploy", "--all"]),
    (["--env", "dev", "status", "-vv", "--timeout", "5"], ["-vv", "--timeout", "5", "--env", "dev", "status"]),
    (["secrets", "get", "x", "--version", "3", "--json"], ["--json", "secrets", "get", "x", "--version", "3"]),
    (["deploy", "--image", "--json"], ["deploy", "--image", "--json"]),  # the value of --image stays
    (["deploy", "fiat-gateway", "--", "--yes"], ["deploy", "fiat-gateway", "--", "--yes"]),
    (["migrate", "status", "--env=dev"], ["--env=dev", "migrate", "status"]),
    (["--json", "status"], ["--json", "status"]),
])
def test_which_global_options_are_moved_to_the_front(argv, hoisted):
    import typer

    from deployctl.cli.main import app, hoist_global_options

    assert hoist_global_options(typer.main.get_command(app), argv)[0] == hoisted


def test_unexpected_error_writes_a_redacted_crash_log(tmp_path, monkeypatch, capsys):
    from deployctl import redact
    from deployctl.cli.common import make_state, run
    from deployctl.errors import ExitCode

    monkeypatch.setenv("DEPLOYCTL_STATE_DIR", str(tmp_path))
    redact.register("crash-canary-secret")
    st = make_state()

    def broken(ctx):
        raise RuntimeError("boom with crash-canary-secret inside")

    assert run(st, broken) == ExitCode.FAILED
    logs = list((tmp_path / "logs").glob("crash-*.log"))
    assert len(logs) == 1
    text = logs[0].read_text()
    assert "RuntimeError" in text and "crash-canary-secret" not in text and "***" in text
    assert stat.S_IMODE(logs[0].stat().st_mode) == 0o600  # C6: a traceback can quote local values
    err = capsys.readouterr().err
    assert str(logs[0]) in err and "unexpected error (a bug)" in err and "Traceback" not in err
    # -v prints the traceback too, redacted
    assert run(make_state(verbose=1), broken) == ExitCode.FAILED
    err = capsys.readouterr().err
    assert "Traceback" in err and "RuntimeError" in err and "crash-canary-secret" not in err
    make_state()  # detach the -v log handler from this test's captured stream


def test_crash_log_falls_back_to_a_private_per_user_temp_dir(tmp_path, monkeypatch, capsys):
    from deployctl.cli.common import make_state, run

    blocker = tmp_path / "state-is-a-file"
    blocker.write_text("x")
    monkeypatch.setenv("DEPLOYCTL_STATE_DIR", str(blocker))
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)  # re-read TMPDIR

    def broken(ctx):
        raise RuntimeError("boom")

    run(make_state(), broken)
    logs = list((tmp_path / "tmp").glob("deployctl-logs-*/crash-*.log"))
    assert len(logs) == 1 and stat.S_IMODE(logs[0].stat().st_mode) == 0o600
    assert stat.S_IMODE(logs[0].parent.stat().st_mode) == 0o700
    assert str(logs[0]) in capsys.readouterr().err


def test_confirmation_needed_without_tty_is_exit_2(tmp_path):
    cli = Cli(tmp_path / "state")
    run = cli("local", "down", "--purge")
    assert run.code == 2
    assert "--yes" in run.stderr


def test_google_libraries_are_imported_only_inside_cloud():
    """DESIGN §2 (C13: checks/environment.py imported google.auth itself). The emulator is a server of its
    own, and runtime.py may import the Cloud SQL connector (connector mode, what a service runs)."""
    import ast

    allowed = {"cloud", "emulator"}
    offenders = []
    for path in (ROOT / "deployctl").rglob("*.py"):
        rel = path.relative_to(ROOT / "deployctl")
        if rel.parts[0] in allowed:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            for name in names:
                if name.split(".")[0] in ("google", "grpc"):
                    offenders.append(f"{rel}:{node.lineno} {name}")
    assert [o for o in offenders if not o.startswith("runtime.py:")] == []
