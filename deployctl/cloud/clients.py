"""One factory for every Google client deployctl uses.

With an emulator address, every client shares one plaintext gRPC channel passed as the transport (no
credentials are looked up: a transport instance plus credentials= raises, and api_endpoint with anonymous
credentials opens TLS and hangs). Otherwise clients use Application Default Credentials, on the channel the
library itself would build. Either way the channel reports each RPC's outcome to the policy's Breaker. Nothing
else in deployctl knows which of the two it talks to.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
import time

from deployctl import errors
from deployctl.cloud.policy import DEFAULT, Breaker, CallPolicy
from deployctl.lazy import once_property

os.environ.setdefault("GRPC_VERBOSITY", "ERROR")  # grpc's C core prints handshake noise otherwise


class Clients:
    def __init__(self, *, emulator_host: str | None, sqladmin_endpoint: str | None = None,
                 policy: CallPolicy = DEFAULT, client_options: dict | None = None) -> None:
        self.emulator_host = emulator_host
        self.sqladmin_endpoint = sqladmin_endpoint
        self.client_options = client_options  # Google only: e.g. {"api_endpoint": a regional or PSC endpoint}
        # Each Clients has its own breaker: the channel below reports to it whether the endpoint answers.
        self.policy = policy if policy.breaker else dataclasses.replace(policy, breaker=Breaker())

    @property
    def emulated(self) -> bool:
        return self.emulator_host is not None

    @once_property
    def channel(self):
        import grpc

        if not self.emulator_host:
            raise RuntimeError("channel is only used with an emulator")
        channel = grpc.insecure_channel(self.emulator_host, options=[("grpc.enable_retries", 0)])
        return grpc.intercept_channel(channel, _outcome_watcher(self.policy.breaker))

    def _make(self, client_cls, transport_cls):
        # called only from once_property getters: client construction is serialised by the instance's lock
        if self.emulator_host:
            return client_cls(transport=transport_cls(channel=self.channel))
        watcher = _outcome_watcher(self.policy.breaker)

        def watched_channel(*args, **kwargs):  # what the transport would build, plus the outcome watcher
            import grpc

            return grpc.intercept_channel(transport_cls.create_channel(*args, **kwargs), watcher)

        try:
            return client_cls(transport=functools.partial(transport_cls, channel=watched_channel),
                              client_options=self.client_options)
        except Exception as exc:
            auth = credentials_error(exc)
            if auth is None:
                raise
            raise auth from exc

    # --- Secret Manager ------------------------------------------------------------------------------
    @once_property
    def secret_manager(self):
        from google.cloud import secretmanager_v1
        from google.cloud.secretmanager_v1.services.secret_manager_service.transports import (
            SecretManagerServiceGrpcTransport,
        )

        return self._make(secretmanager_v1.SecretManagerServiceClient, SecretManagerServiceGrpcTransport)

    # --- Cloud Run v2 --------------------------------------------------------------------------------
    def _run(self, name: str):
        import importlib

        from google.cloud import run_v2

        module = importlib.import_module(f"google.cloud.run_v2.services.{name}.transports")
        prefix = "".join(p.capitalize() for p in name.split("_"))
        return self._make(getattr(run_v2, f"{prefix}Client"), getattr(module, f"{prefix}GrpcTransport"))

    @once_property
    def services(self):
        return self._run("services")

    @once_property
    def revisions(self):
        return self._run("revisions")

    @once_property
    def jobs(self):
        return self._run("jobs")

    @once_property
    def executions(self):
        return self._run("executions")

    # --- Cloud SQL Admin -----------------------------------------------------------------------------
    def _sql(self, name: str):
        import importlib

        from google.cloud import sqladmin_v1

        module = importlib.import_module(f"google.cloud.sqladmin_v1.services.{name}.transports")
        prefix = "".join(p.capitalize() for p in name.split("_"))
        return self._make(getattr(sqladmin_v1, f"{prefix}Client"), getattr(module, f"{prefix}GrpcTransport"))

    @once_property
    def sql_instances(self):
        return self._sql("sql_instances_service")

    @once_property
    def sql_users(self):
        return self._sql("sql_users_service")

    @once_property
    def sql_databases(self):
        return self._sql("sql_databases_service")

    @once_property
    def sql_operations(self):
        return self._sql("sql_operations_service")

    # --- Logging v2 ----------------------------------------------------------------------------------
    @once_property
    def logging(self):
        from google.cloud.logging_v2.services.logging_service_v2 import LoggingServiceV2Client
        from google.cloud.logging_v2.services.logging_service_v2.transports import (
            LoggingServiceV2GrpcTransport,
        )

        return self._make(LoggingServiceV2Client, LoggingServiceV2GrpcTransport)

    def close(self) -> None:
        if "channel" in self.__dict__:
            self.channel.close()


CREDENTIALS_HINT = ("run `gcloud auth application-default login` (or set GOOGLE_APPLICATION_CREDENTIALS to a key "
                    "file; in CI use Workload Identity, see docs/ci.md); for the local cloud use `--env local` or "
                    "set DEPLOYCTL_EMULATOR_HOST")


def credentials_error(exc: BaseException) -> errors.DeployctlError | None:
    """A DeployctlError for google.auth's "no credentials" / "cannot refresh them", else None."""
    from google.auth import exceptions as auth_exc

    if isinstance(exc, auth_exc.DefaultCredentialsError):
        first = str(exc).split(". ")[0].rstrip(".")
        return errors.ConfigError(f"no Google Cloud credentials: {first}", hint=CREDENTIALS_HINT,
                                  code="no-credentials")
    if isinstance(exc, auth_exc.GoogleAuthError):
        return errors.PermissionDenied(f"the Google Cloud credentials could not be used: {exc}",
                                       hint=CREDENTIALS_HINT, code="credentials")
    return None


# grpc's own words when the request never reached a server; any other UNAVAILABLE was sent by the endpoint
# (an answer: it is alive), e.g. an overloaded frontend, or the local cloud's injected faults.
_NO_CONNECTION = re.compile(r"failed to connect|connection (refused|reset)|socket closed|broken pipe|"
                            r"handshake|dns resolution|network is unreachable|no route to host|goaway|"
                            r"keepalive", re.IGNORECASE)


def _outcome_watcher(breaker: Breaker):
    """A channel interceptor telling the breaker whether each unary RPC got an answer from the endpoint."""
    import grpc

    class Watcher(grpc.UnaryUnaryClientInterceptor):
        def intercept_unary_unary(self, continuation, client_call_details, request):
            started = time.monotonic()
            outcome = continuation(client_call_details, request)

            def seen(call) -> None:
                code = call.code()
                if code == grpc.StatusCode.DEADLINE_EXCEEDED or (
                        code == grpc.StatusCode.UNAVAILABLE and _NO_CONNECTION.search(call.details() or "")):
                    breaker.failed(started)
                else:
                    breaker.answered()

            outcome.add_done_callback(seen)
            return outcome

    return Watcher()
