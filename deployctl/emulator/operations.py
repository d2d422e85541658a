"""google.longrunning.Operations for the emulator's Cloud Run API: stored on disk, waited on in memory.

An operation's metadata and response are packed as `Any` with the message's full type name, which is what
`google.api_core.operation.from_gapic` unpacks on the client side.
"""

from __future__ import annotations

import base64
import threading
import time
import uuid

import grpc

from deployctl.emulator import run_common
from deployctl.emulator.rpc import Method, RpcError, not_found, service
from deployctl.emulator.state import Store

COLLECTION = "operations"
MAX_WAIT = 60.0


def _pack(msg) -> str:
    from google.protobuf import any_pb2

    pb = type(msg).pb(msg) if hasattr(type(msg), "pb") else msg
    packed = any_pb2.Any()
    packed.Pack(pb)
    return base64.b64encode(packed.SerializeToString()).decode()


def _unpack(data: str | None):
    from google.protobuf import any_pb2

    packed = any_pb2.Any()
    if data:
        packed.ParseFromString(base64.b64decode(data))
    return packed


class Operations:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._changed = threading.Condition()

    def begin(self, parent: str, metadata) -> str:
        """A new pending operation under `parent` (projects/p/locations/l); returns its name."""
        name = f"{parent}/operations/{uuid.uuid4()}"
        self.store.put(COLLECTION, name, {"name": name, "done": False, "metadata": _pack(metadata),
                                          "created": time.time()})
        return name

    def finish(self, name: str, *, response=None, error: tuple[grpc.StatusCode, str] | None = None,
               metadata=None) -> None:
        with self.store.locked():
            rec = self.store.get(COLLECTION, name)
            if rec is None or rec["done"]:
                return
            rec["done"] = True
            if metadata is not None:
                rec["metadata"] = _pack(metadata)
            if error is not None:
                rec["error"] = {"code": error[0].value[0], "message": error[1]}
            else:
                rec["response"] = _pack(response)
            self.store.put(COLLECTION, name, rec)
        with self._changed:
            self._changed.notify_all()

    def completed(self, parent: str, response, metadata=None) -> str:
        name = self.begin(parent, metadata if metadata is not None else response)
        self.finish(name, response=response)
        return name

    def is_pending(self, name: str) -> bool:
        rec = self.store.get(COLLECTION, name)
        return bool(rec) and not rec["done"]

    def pending(self) -> list[dict]:
        return [r for r in self.store.list(COLLECTION) if not r["done"]]

    # --- wire ----------------------------------------------------------------------------------------
    def proto(self, name: str):
        from google.longrunning import operations_pb2
        from google.rpc import status_pb2

        rec = self.store.get(COLLECTION, name)
        if rec is None:
            raise not_found(f"Operation {name}")
        op = operations_pb2.Operation(name=name, done=rec["done"])
        op.metadata.CopyFrom(_unpack(rec.get("metadata")))
        if "error" in rec:
            op.error.CopyFrom(status_pb2.Status(code=rec["error"]["code"], message=rec["error"]["message"]))
        elif rec["done"]:
            op.response.CopyFrom(_unpack(rec.get("response")))
        return op

    def wait(self, name: str, timeout: float) -> object:
        deadline = time.monotonic() + min(timeout or MAX_WAIT, MAX_WAIT)
        while True:
            op = self.proto(name)
            remaining = deadline - time.monotonic()
            if op.done or remaining <= 0:
                return op
            with self._changed:
                self._changed.wait(min(remaining, 0.5))

    def handlers(self) -> list[grpc.GenericRpcHandler]:
        from google.longrunning import operations_pb2
        from google.protobuf import empty_pb2

        def get(req):
            return self.proto(req.name)

        def wait(req):
            timeout = req.timeout.seconds + req.timeout.nanos / 1e9 if req.HasField("timeout") else MAX_WAIT
            return self.wait(req.name, timeout)

        def list_(req):
            prefix = req.name.rstrip("/") + "/operations/" if req.name else ""
            names = [r["name"] for r in self.store.list(COLLECTION, prefix)]
            page, token = run_common.page(names, req.page_size, req.page_token)
            return operations_pb2.ListOperationsResponse(operations=[self.proto(n) for n in page],
                                                         next_page_token=token)

        def delete(req):
            if self.store.delete(COLLECTION, req.name) is None:
                raise not_found(f"Operation {req.name}")
            return empty_pb2.Empty()

        def cancel(req):
            raise RpcError(grpc.StatusCode.UNIMPLEMENTED, "CancelOperation is not supported by the local cloud")

        return [service("google.longrunning.Operations", {
            "GetOperation": Method(get, operations_pb2.GetOperationRequest, operations_pb2.Operation),
            "WaitOperation": Method(wait, operations_pb2.WaitOperationRequest, operations_pb2.Operation),
            "ListOperations": Method(list_, operations_pb2.ListOperationsRequest,
                                     operations_pb2.ListOperationsResponse),
            "DeleteOperation": Method(delete, operations_pb2.DeleteOperationRequest, empty_pb2.Empty),
            "CancelOperation": Method(cancel, operations_pb2.CancelOperationRequest, empty_pb2.Empty),
        })]
