"""The Context every command receives: which environment, its configuration, the cloud clients (built lazily,
pointed at the local cloud or at Google), how to report progress, and whether it may ask questions."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from deployctl.errors import ConfirmationRequired, StateDirError
from deployctl.lazy import once_property

if TYPE_CHECKING:
    from deployctl.config import Config


@dataclass(frozen=True)
class Event:
    """A progress report from a command to whoever renders it."""

    subject: str  # a service name, or "" for the environment
    message: str
    status: str = "info"  # info | ok | warn | fail | skip
    detail: bool = False  # only shown with --verbose


def default_config_dir() -> Path:
    """configs/ of the project: $DEPLOYCTL_CONFIG_DIR, ./configs, or the one beside this package (a checkout)."""
    if os.environ.get("DEPLOYCTL_CONFIG_DIR"):
        return Path(os.environ["DEPLOYCTL_CONFIG_DIR"])
    here = Path.cwd() / "configs"
    if here.is_dir():
        return here
    return Path(__file__).resolve().parent.parent / "configs"


def state_dir_hint() -> str:
    """The next step for a state directory that cannot be used, by where its path came from."""
    if os.environ.get("DEPLOYCTL_STATE_DIR"):
        return ("point DEPLOYCTL_STATE_DIR at a directory you can write (it is made if missing), or unset it to use "
                ".deployctl/<env> beside the configs directory")
    return ("make .deployctl/<env> beside the configs directory writable, or set DEPLOYCTL_STATE_DIR to a "
            "directory you can write")


@dataclass
class Context:
    env: str = "local"
    config_dir: Path = field(default_factory=default_config_dir)
    verbose: bool = False
    yes: bool = False
    interactive: bool = False
    timeout: float | None = None  # overall deadline for a command's cloud work, seconds
    on_event: Callable[[Event], None] = lambda e: None
    ask: Callable[[str], bool] | None = None  # set by the CLI when a person can answer

    @once_property
    def config(self) -> Config:
        from deployctl.config import load  # pydantic: only when a command needs the config

        return load(Path(self.config_dir), self.env)

    @property
    def project_root(self) -> Path:
        return self.config.root or Path.cwd()

    @property
    def state_dir(self) -> Path:
        """Where deployctl keeps this environment's local state (the local cloud, logs)."""
        given = os.environ.get("DEPLOYCTL_STATE_DIR")
        path = (Path(given) if given else Path(self.config_dir).resolve().parent / ".deployctl" / self.env).resolve()
        try:
            is_file = path.exists() and not path.is_dir()
        except OSError as e:  # a name too long, a parent we may not search: not a bug of ours
            raise StateDirError(f"the state directory {path} cannot be used: {e.strerror or e}",
                                hint=state_dir_hint()) from None
        if is_file:
            raise StateDirError(f"the state directory {path} is not a directory",
                                hint=("point DEPLOYCTL_STATE_DIR at a directory (it is made if missing), or unset it"
                                      if given else f"move the file {path} out of the way"))
        return path

    @property
    def project(self) -> str:
        return self.config.environment.project

    @property
    def region(self) -> str:
        return self.config.environment.region

    @property
    def location(self) -> str:
        return f"projects/{self.project}/locations/{self.region}"

    @property
    def emulated(self) -> bool:
        return bool(os.environ.get("DEPLOYCTL_EMULATOR_HOST")) or self.config.environment.emulator

    def terraform_state_path(self) -> Path | None:
        env = self.config.environment
        if env.terraform_state:
            return self.config.resolve(env.terraform_state)
        if env.emulator:
            return self.state_dir / "terraform.tfstate"
        return None

    @once_property
    def clients(self):
        """The Google clients, against the local cloud (started if needed) or Application Default Credentials;
        built once, also when doctor's check threads ask first (see deployctl.lazy)."""
        return self._build_clients()

    def _build_clients(self):
        from deployctl.cloud.clients import Clients
        from deployctl.cloud.policy import DEFAULT

        policy = DEFAULT.with_deadline(self.timeout) if self.timeout else DEFAULT
        host = os.environ.get("DEPLOYCTL_EMULATOR_HOST")
        rest = os.environ.get("DEPLOYCTL_SQLADMIN_ENDPOINT")
        if not host and self.config.environment.emulator:
            from deployctl.localcloud.lifecycle import ensure_running

            endpoint = ensure_running(self)
            host, rest = endpoint.grpc, endpoint.rest
        return Clients(emulator_host=host, sqladmin_endpoint=rest, policy=policy)

    def progress(self, subject: str, message: str, status: str = "info", *, detail: bool = False) -> None:
        self.on_event(Event(subject, message, status, detail))

    def confirm(self, question: str) -> bool:
        """True when the user agreed (or passed --yes); raises when nobody can be asked."""
        if self.yes:
            return True
        if not self.interactive or self.ask is None:
            raise ConfirmationRequired(f"{question} — confirmation needed, and this session cannot prompt",
                                       hint="re-run with --yes to confirm")
        return self.ask(question)
