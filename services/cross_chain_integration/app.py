"""cross-chain-integration: POST /transfers records a transfer signed with SIGNING_KEY, GET /transfers lists them
(filtered by status, chain or sender).

The chain and status values are the enums of migrations/cross_chain_integration at head.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from services.common import create_app as create_service_app
from services.common import db_call, limit_param, read_json_object, require_amount, require_text, to_json

SERVICE = "cross-chain-integration"
CHAINS = ("ethereum", "polygon", "arbitrum", "optimism", "base")
TRANSFER_STATUSES = ("pending", "submitted", "confirmed", "failed")
COLUMNS = ("id, source_chain, destination_chain, asset, amount, sender, recipient, status, signature, "
           "created_at")


def sign(fields: dict) -> str:
    """HMAC-SHA256 over the transfer's canonical JSON, so a row altered outside the service is detectable."""
    key = os.environ.get("SIGNING_KEY", "")
    if not key:
        raise HTTPException(503, "SIGNING_KEY is not set: the service cannot sign transfers")
    canonical = json.dumps({k: str(v) for k, v in fields.items()}, sort_keys=True, separators=(",", ":"))
    return hmac.new(key.encode(), canonical.encode(), hashlib.sha256).hexdigest()


def _choice(body: dict, name: str, allowed: tuple[str, ...]) -> str:
    value = body.get(name)
    if value not in allowed:
        raise HTTPException(422, f"{name} must be one of {', '.join(allowed)}")
    return value


def _insert_transfer(values: dict) -> dict:
    from sqlalchemy import text

    from deployctl.runtime import get_engine

    with get_engine().begin() as conn:
        row = conn.execute(text(
            "INSERT INTO transfers (source_chain, destination_chain, asset, amount, sender, recipient, signature) "
            "VALUES (CAST(:source_chain AS chain), CAST(:destination_chain AS chain), :asset, :amount, :sender, "
            f":recipient, :signature) RETURNING {COLUMNS}"), values).mappings().one()
    return dict(row)


def _list_transfers(filters: dict, limit: int) -> list[dict]:
    from sqlalchemy import text

    from deployctl.runtime import get_engine

    where = []
    if filters.get("status"):
        where.append("status = CAST(:status AS transfer_status)")
    if filters.get("chain"):
        where.append("(source_chain = CAST(:chain AS chain) OR destination_chain = CAST(:chain AS chain))")
    if filters.get("sender"):
        where.append("sender = :sender")
    clause = ("WHERE " + " AND ".join(where) + " ") if where else ""
    with get_engine().connect() as conn:
        rows = conn.execute(text(f"SELECT {COLUMNS} FROM transfers {clause}ORDER BY id DESC LIMIT :limit"),
                            {**filters, "limit": limit}).mappings().all()
    return [dict(r) for r in rows]


async def create_transfer(request: Request) -> JSONResponse:
    body = await read_json_object(request)
    values = {
        "source_chain": _choice(body, "source_chain", CHAINS),
        "destination_chain": _choice(body, "destination_chain", CHAINS),
        "asset": require_text(body, "asset", max_length=16),
        "amount": require_amount(body, places=18),
        "sender": require_text(body, "sender", max_length=128),
        "recipient": require_text(body, "recipient", max_length=128),
    }
    if values["source_chain"] == values["destination_chain"]:
        raise HTTPException(422, "source_chain and destination_chain must differ")
    values["signature"] = sign(values)
    row = await db_call(_insert_transfer, values)
    return JSONResponse(to_json(row), status_code=201)


async def list_transfers(request: Request) -> JSONResponse:
    params = request.query_params
    filters = {}
    if "status" in params:
        filters["status"] = _choice(dict(params), "status", TRANSFER_STATUSES)
    if "chain" in params:
        filters["chain"] = _choice(dict(params), "chain", CHAINS)
    if "sender" in params:
        filters["sender"] = require_text(dict(params), "sender", max_length=128)
    rows = await db_call(_list_transfers, filters, limit_param(request))
    return JSONResponse({"transfers": to_json(rows)})


def create_app():
    return create_service_app(SERVICE, [
        Route("/transfers", create_transfer, methods=["POST"]),
        Route("/transfers", list_transfers, methods=["GET"]),
    ], database=True)
