"""Serving proto-plus request/response types over gRPC without generated servicer classes.

The Google client packages ship proto-plus message classes but no server stubs; a generic handler per
service maps each method name to a function and the message classes' own (de)serialisers.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import grpc

log = logging.getLogger("deployctl.emulator")


class RpcError(Exception):
    """Raised by a servicer method; becomes the call's status, as Google would return it."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def not_found(what: str) -> RpcError:
    return RpcError(grpc.StatusCode.NOT_FOUND, f"{what} not found")


def already_exists(what: str) -> RpcError:
    return RpcError(grpc.StatusCode.ALREADY_EXISTS, f"{what} already exists")


def invalid(message: str) -> RpcError:
    return RpcError(grpc.StatusCode.INVALID_ARGUMENT, message)


def failed_precondition(message: str) -> RpcError:
    return RpcError(grpc.StatusCode.FAILED_PRECONDITION, message)


@dataclass(frozen=True)
class Method:
    fn: Callable  # fn(request) -> response message
    request: type  # proto-plus (or raw protobuf) class
    response: type


def _codec(cls: type) -> tuple[Callable, Callable]:
    if hasattr(cls, "pb") and hasattr(cls, "deserialize"):  # proto-plus
        return cls.deserialize, cls.serialize
    return cls.FromString, lambda m: m.SerializeToString()  # raw protobuf


def service(full_name: str, methods: dict[str, Method]) -> grpc.GenericRpcHandler:
    """A generic handler for `full_name` (e.g. "google.cloud.secretmanager.v1.SecretManagerService")."""
    handlers = {}
    for name, m in methods.items():
        req_de, _ = _codec(m.request)
        _, resp_ser = _codec(m.response)
        handlers[name] = grpc.unary_unary_rpc_method_handler(
            _wrap(f"{full_name}/{name}", m.fn), request_deserializer=req_de, response_serializer=resp_ser
        )
    return grpc.method_handlers_generic_handler(full_name, handlers)


def _wrap(label: str, fn: Callable) -> Callable:
    def handler(request, context: grpc.ServicerContext):
        try:
            return fn(request)
        except RpcError as e:
            context.abort(e.code, e.message)
        except Exception:
            log.exception("emulator: %s failed", label)
            context.abort(grpc.StatusCode.INTERNAL, f"emulator error in {label}")

    return handler
