"""One factory for every Google client deployctl uses.

With an emulator address, every client shares one plaintext gRPC channel passed as the transport (no
credentials are looked up: a transport instance plus credentials= raises, and api_endpoint with anonymous
credentials opens TLS and hangs). Otherwise clients use Application Default Credentials. Nothing else in
deployctl knows which of the two it talks to.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from functools import cached_property

from deployctl.cloud.policy import DEFAULT, Breaker, CallPolicy

os.environ.setdefault("GRPC_VERBOSITY", "ERROR")  # grpc's C core prints handshake noise otherwise


class Clients:
    def __init__(self, *, emulator_host: str | None, sqladmin_endpoint: str | None = None,
                 policy: CallPolicy = DEFAULT) -> None:
        self.emulator_host = emulator_host
        self.sqladmin_endpoint = sqladmin_endpoint
        # Each Clients has its own breaker: the channel below reports to it whether the endpoint answers.
        self.policy = policy if policy.breaker else dataclasses.replace(policy, breaker=Breaker())
        self._lock = threading.Lock()

    @property
    def emulated(self) -> bool:
        return self.emulator_host is not None

    @cached_property
    def channel(self):
        import grpc

        if not self.emulator_host:
            raise RuntimeError("channel is only used with an emulator")
        channel = grpc.insecure_channel(self.emulator_host, options=[("grpc.enable_retries", 0)])
        return grpc.intercept_channel(channel, _outcome_watcher(self.policy.breaker))

    def _make(self, client_cls, transport_cls):
        with self._lock:
            if self.emulator_host:
                return client_cls(transport=transport_cls(channel=self.channel))
            return client_cls()

    # --- Secret Manager ------------------------------------------------------------------------------
    @cached_property
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

    @cached_property
    def services(self):
        return self._run("services")

    @cached_property
    def revisions(self):
        return self._run("revisions")

    @cached_property
    def jobs(self):
        return self._run("jobs")

    @cached_property
    def executions(self):
        return self._run("executions")

    # --- Cloud SQL Admin -----------------------------------------------------------------------------
    def _sql(self, name: str):
        import importlib

        from google.cloud import sqladmin_v1

        module = importlib.import_module(f"google.cloud.sqladmin_v1.services.{name}.transports")
        prefix = "".join(p.capitalize() for p in name.split("_"))
        return self._make(getattr(sqladmin_v1, f"{prefix}Client"), getattr(module, f"{prefix}GrpcTransport"))

    @cached_property
    def sql_instances(self):
        return self._sql("sql_instances_service")

    @cached_property
    def sql_users(self):
        return self._sql("sql_users_service")

    @cached_property
    def sql_databases(self):
        return self._sql("sql_databases_service")

    @cached_property
    def sql_operations(self):
        return self._sql("sql_operations_service")

    # --- Logging v2 ----------------------------------------------------------------------------------
    @cached_property
    def logging(self):
        from google.cloud.logging_v2.services.logging_service_v2 import LoggingServiceV2Client
        from google.cloud.logging_v2.services.logging_service_v2.transports import (
            LoggingServiceV2GrpcTransport,
        )

        return self._make(LoggingServiceV2Client, LoggingServiceV2GrpcTransport)

    def close(self) -> None:
        if "channel" in self.__dict__:
            self.channel.close()


def _outcome_watcher(breaker: Breaker):
    """A channel interceptor telling the breaker whether each unary RPC got an answer from the endpoint."""
    import grpc

    silent = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)

    class Watcher(grpc.UnaryUnaryClientInterceptor):
        def intercept_unary_unary(self, continuation, client_call_details, request):
            started = time.monotonic()
            outcome = continuation(client_call_details, request)

            def seen(call) -> None:
                if call.code() in silent:
                    breaker.failed(started)
                else:
                    breaker.answered()

            outcome.add_done_callback(seen)
            return outcome

    return Watcher()
