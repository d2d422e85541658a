"""fiat-gateway: POST /deposits records a deposit, GET /deposits lists the latest ones, GET /transfers lists
cross-chain transfers through cross-chain-integration (CROSS_CHAIN_URL).

With API_KEY_SERVICE_URL set (deployctl fills it with api-key-service's URL), every route but the health ones
requires an `X-API-Key` header that api-key-service accepts. Without it the routes are open, and the service
says so when it starts.
"""

from __future__ import annotations

import os
import re

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from services.common import create_app as create_service_app
from services.common import db_call, limit_param, log, read_json_object, require_amount, require_text, to_json

SERVICE = "fiat-gateway"
CURRENCY = re.compile(r"^[A-Z]{3}$")
KEY_CHECK_TIMEOUT = 2.0
UPSTREAM_TIMEOUT = 5.0
TRANSFER_FILTERS = ("chain", "status", "sender", "limit")  # what GET /transfers passes on
COLUMNS = "id, account_id, amount, currency, status, external_ref, created_at"


async def require_api_key(request: Request) -> None:
    url = os.environ.get("API_KEY_SERVICE_URL", "").strip()
    if not url:
        return
    key = request.headers.get("x-api-key")
    if not key:
        raise HTTPException(401, "an X-API-Key header is required")
    import httpx

    try:
        async with httpx.AsyncClient(timeout=KEY_CHECK_TIMEOUT) as client:
            response = await client.post(url.rstrip("/") + "/keys/verify", json={"key": key})
        response.raise_for_status()
        valid = response.json().get("valid") is True
    except (httpx.HTTPError, ValueError) as exc:
        log.warning("api-key-service unavailable: %s", type(exc).__name__)
        raise HTTPException(503, "api-key-service unavailable") from None
    if not valid:
        raise HTTPException(401, "the API key is not valid")


def _insert_deposit(values: dict) -> dict:
    from sqlalchemy import text

    from deployctl.runtime import get_engine

    with get_engine().begin() as conn:
        row = conn.execute(text(
            "INSERT INTO deposits (account_id, amount, currency, external_ref) "
            f"VALUES (:account_id, :amount, :currency, :external_ref) RETURNING {COLUMNS}"), values).mappings().one()
    return dict(row)


def _list_deposits(account_id: str | None, limit: int) -> list[dict]:
    from sqlalchemy import text

    from deployctl.runtime import get_engine

    where = "WHERE account_id = :account_id " if account_id else ""
    with get_engine().connect() as conn:
        rows = conn.execute(text(f"SELECT {COLUMNS} FROM deposits {where}ORDER BY id DESC LIMIT :limit"),
                            {"account_id": account_id, "limit": limit}).mappings().all()
    return [dict(r) for r in rows]


async def create_deposit(request: Request) -> JSONResponse:
    await require_api_key(request)
    body = await read_json_object(request)
    currency = body.get("currency")
    if not isinstance(currency, str) or not CURRENCY.match(currency):
        raise HTTPException(422, "currency must be an ISO 4217 code such as USD")
    values = {
        "account_id": require_text(body, "account_id", max_length=64),
        "amount": require_amount(body, places=2),
        "currency": currency,
        "external_ref": require_text(body, "external_ref", max_length=128, optional=True),
    }
    row = await db_call(_insert_deposit, values)
    return JSONResponse(to_json(row), status_code=201)


async def list_deposits(request: Request) -> JSONResponse:
    await require_api_key(request)
    limit = limit_param(request)
    rows = await db_call(_list_deposits, request.query_params.get("account_id"), limit)
    return JSONResponse({"deposits": to_json(rows)})


async def list_transfers(request: Request) -> JSONResponse:
    """Cross-chain transfers, from cross-chain-integration: its answer (or why there is none), passed on."""
    await require_api_key(request)
    base = os.environ.get("CROSS_CHAIN_URL", "").strip()
    if not base:
        raise HTTPException(503, "CROSS_CHAIN_URL is not set: the gateway cannot reach cross-chain-integration")
    import httpx

    params = {k: v for k, v in request.query_params.items() if k in TRANSFER_FILTERS}
    try:
        async with httpx.AsyncClient(timeout=UPSTREAM_TIMEOUT) as client:
            response = await client.get(base.rstrip("/") + "/transfers", params=params)
        body = response.json()
    except (httpx.HTTPError, ValueError) as exc:
        log.warning("cross-chain-integration unavailable: %s", type(exc).__name__)
        raise HTTPException(503, "cross-chain-integration unavailable") from None
    if response.status_code >= 500 or not isinstance(body, dict):
        raise HTTPException(503, f"cross-chain-integration answered HTTP {response.status_code}")
    return JSONResponse(body, status_code=response.status_code)


def create_app():
    if not os.environ.get("API_KEY_SERVICE_URL", "").strip():
        log.warning("API_KEY_SERVICE_URL is not set: requests are not authenticated")
    return create_service_app(SERVICE, [
        Route("/deposits", create_deposit, methods=["POST"]),
        Route("/deposits", list_deposits, methods=["GET"]),
        Route("/transfers", list_transfers, methods=["GET"]),
    ], database=True)
