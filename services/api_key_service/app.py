"""api-key-service: POST /keys issues a key (shown once), POST /keys/verify says whether a key is valid.

Only HMAC-SHA256(API_KEY_PEPPER, key) is kept, in memory: a leaked store (or heap dump) without the pepper
cannot be turned back into keys. A restart forgets every key; that is acceptable for this thin service.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import os
import re
import secrets
import threading

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from services.common import create_app as create_service_app
from services.common import read_json_object, require_text

SERVICE = "api-key-service"
KEY_FORMAT = re.compile(r"^ak_([0-9a-f]{12})_([A-Za-z0-9_-]{32})$")
MAX_KEYS = 100_000


class KeyStore:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._keys: dict[str, dict] = {}

    @staticmethod
    def _pepper() -> bytes:
        pepper = os.environ.get("API_KEY_PEPPER", "")
        if not pepper:
            raise HTTPException(503, "API_KEY_PEPPER is not set: the service cannot issue or verify keys")
        return pepper.encode()

    def _digest(self, key: str) -> bytes:
        return hmac.new(self._pepper(), key.encode(), hashlib.sha256).digest()

    def issue(self, name: str | None) -> dict:
        key_id = secrets.token_hex(6)
        key = f"ak_{key_id}_{secrets.token_urlsafe(24)}"
        record = {"id": key_id, "name": name,
                  "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
        digest = self._digest(key)
        with self._lock:
            if len(self._keys) >= MAX_KEYS:
                raise HTTPException(507, "the key store is full")
            self._keys[key_id] = {**record, "digest": digest}
        return {**record, "key": key}

    def verify(self, key: str) -> bool:
        match = KEY_FORMAT.match(key)
        digest = self._digest(key)  # computed even for malformed keys: same cost either way
        if not match:
            return False
        with self._lock:
            record = self._keys.get(match.group(1))
        return record is not None and hmac.compare_digest(record["digest"], digest)


def create_app():
    store = KeyStore()

    async def issue_key(request: Request) -> JSONResponse:
        body = await read_json_object(request) if await request.body() else {}
        return JSONResponse(store.issue(require_text(body, "name", max_length=64, optional=True)),
                            status_code=201)

    async def verify_key(request: Request) -> JSONResponse:
        body = await read_json_object(request)
        key = body.get("key")
        if not isinstance(key, str) or len(key) > 256:
            raise HTTPException(422, "key must be a string")
        return JSONResponse({"valid": store.verify(key)})

    return create_service_app(SERVICE, [
        Route("/keys", issue_key, methods=["POST"]),
        Route("/keys/verify", verify_key, methods=["POST"]),
    ], database=False)
