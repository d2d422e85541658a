"""Database probes that run where the database is reachable: from here, or inside the VPC as a Cloud Run Job
(deployctl.checks.vpcprobe). Results are plain JSON-able dicts keyed by candidate label: no password ever
leaves this module, only whether it was accepted and, if not, the SQLSTATE diagnosis."""

from __future__ import annotations

import socket
import time
from concurrent.futures import ThreadPoolExecutor


def url_for(*, host: str, port: int, database: str, user: str, password: str, sslmode: str,
            timeout: float, sslrootcert: str | None = None) -> str:
    """A probe's pg8000 URL; `sslrootcert` is the instance's server CA here (verify-ca / verify-full need it)."""
    from deployctl import runtime

    query = {"sslmode": sslmode, "connect_timeout": str(max(1, int(timeout)))}
    if sslrootcert:
        query["sslrootcert"] = sslrootcert
    return runtime.compose_url(driver="pg8000", user=user, password=password, database=database, host=host,
                               port=port, query=query)


def tcp(host: str, port: int, timeout: float) -> dict:
    start = time.monotonic()
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return {"ok": True, "elapsed": time.monotonic() - start}
    except OSError as e:
        kind = "timeout" if isinstance(e, TimeoutError) else ("refused" if isinstance(e, ConnectionRefusedError)
                                                              else type(e).__name__)
        return {"ok": False, "elapsed": time.monotonic() - start, "error": kind}


def login(url: str, timeout: float, sslrootcert: str | None = None) -> dict:
    from deployctl.db.connect import probe

    r = probe(url, timeout=timeout, sslrootcert=sslrootcert)
    out = {"ok": r.ok, "elapsed": round(r.elapsed, 3), "sqlstate": r.sqlstate}
    if r.diagnosis:
        d = r.diagnosis
        out.update(code=d.code, title=d.title, cause=d.cause, hint=d.hint)
    return out


def logins(target: dict, candidates: dict[str, str], timeout: float) -> dict[str, dict]:
    """label -> login result, for each candidate password (attempted concurrently)."""
    def one(label: str) -> tuple[str, dict]:
        return label, login(url_for(password=candidates[label], timeout=timeout, **target), timeout)

    if not candidates:
        return {}
    with ThreadPoolExecutor(max_workers=min(4, len(candidates))) as pool:
        return dict(pool.map(one, list(candidates)))


SESSION_SQL = {
    "ssl": "SELECT ssl, coalesce(version, '') FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
    "create_on_public": "SELECT has_schema_privilege(current_user, 'public', 'CREATE')",
    "role": "SELECT rolcanlogin, rolvaliduntil::text FROM pg_roles WHERE rolname = current_user",
    "alembic": "SELECT version_num FROM alembic_version",
}


def session(url: str, timeout: float, sslrootcert: str | None = None) -> dict:
    """What a working login can tell: SSL in use, CREATE on schema public, its role, the Alembic revision."""
    from deployctl.db.connect import connect
    from deployctl.db.sqlstate import classify

    out: dict = {}
    try:
        conn = connect(url, timeout=timeout, application_name="deployctl-doctor", sslrootcert=sslrootcert)
    except Exception as e:  # noqa: BLE001
        d = classify(e)
        return {"error": {"code": d.code, "cause": d.cause, "hint": d.hint}}
    try:
        ssl_row = conn.run(SESSION_SQL["ssl"])
        out["ssl"] = bool(ssl_row and ssl_row[0][0])
        out["ssl_version"] = ssl_row[0][1] if ssl_row else ""
        out["create_on_public"] = bool(conn.run(SESSION_SQL["create_on_public"])[0][0])
        role = conn.run(SESSION_SQL["role"])
        out["role"] = {"can_login": bool(role[0][0]), "valid_until": role[0][1]} if role else None
        exists = conn.run("SELECT to_regclass('public.alembic_version') IS NOT NULL")[0][0]
        out["alembic"] = [r[0] for r in conn.run(SESSION_SQL["alembic"])] if exists else None
    except Exception as e:  # noqa: BLE001
        d = classify(e)
        out["error"] = {"code": d.code, "cause": d.cause, "hint": d.hint}
    finally:
        try:
            conn.close()
        except Exception:  # noqa: BLE001
            pass
    return out


ROLE_SQL = ("SELECT rolcanlogin, rolvaliduntil::text, coalesce(rolvaliduntil < now(), false) FROM pg_roles "
            "WHERE rolname = :name")


def role_of(url: str, role: str, timeout: float) -> dict | None:
    """What pg_roles (readable by every role) says of `role`, read over the login in `url`: whether it exists,
    may log in, and when its password expires. None when that login does not work."""
    from deployctl.db.connect import connect

    try:
        conn = connect(url, timeout=timeout, application_name="deployctl-doctor")
    except Exception:  # noqa: BLE001 - this login does not work: the caller tries another
        return None
    try:
        rows = conn.run(ROLE_SQL, name=role)
    except Exception:  # noqa: BLE001
        return None
    finally:
        try:
            conn.close()
        except Exception:  # noqa: BLE001
            pass
    if not rows:
        return {"exists": False}
    can_login, valid_until, expired = rows[0]
    return {"exists": True, "can_login": bool(can_login), "valid_until": valid_until, "expired": bool(expired)}


STORED = "stored-url"  # session_via when only the stored connection string logged in

# A string with raw reserved characters in its userinfo is not tried: a parser would take a piece of the
# password for the host (and send it to DNS) or the port, and quote it in its error.
NOT_TRIED_UNENCODED = {"ok": False, "code": "unencoded-reserved", "sqlstate": None,
                       "title": "not percent-encoded", "hint": "see dsn.lint",
                       "cause": "the user or password holds raw reserved characters; not tried"}


def _misparsed(url: str) -> bool:
    from deployctl import dsn

    return any(f.code == "unencoded-reserved" for f in dsn.lint(url))


def run_all(target: dict, candidates: dict[str, str], main: str | None, timeout: float,
            stored_url: str | None = None, tcp_result: dict | None = None) -> dict:
    """Everything doctor asks of the database, in one go: TCP, each candidate's login, the stored connection
    string as the service would use it, and the session facts through the `main` candidate (the one the
    service uses), the first accepted one, or else the stored string when it logs in."""
    result: dict = {"tcp": tcp_result or tcp(target["host"], target["port"], timeout)}
    if not result["tcp"]["ok"]:
        return result
    if stored_url is not None and _misparsed(stored_url):
        result["stored_url"] = NOT_TRIED_UNENCODED
        stored_url = None
    with ThreadPoolExecutor(max_workers=1) as pool:  # the stored string logs in while the candidates do
        here_ca = target.get("sslrootcert")  # for a stored string naming the CA as the image does, or not at all
        stored = pool.submit(login, stored_url, timeout, here_ca) if stored_url is not None else None
        result["logins"] = logins(target, candidates, timeout)
        if stored is not None:
            try:
                result["stored_url"] = stored.result()
            except Exception:  # noqa: BLE001 - an unparseable string: dsn lint explains it
                result["stored_url"] = {"ok": False, "code": "unparseable", "title": "cannot be parsed",
                                        "cause": "the stored connection string cannot be parsed", "hint": ""}
    accepted = [k for k, v in result["logins"].items() if v["ok"]]
    use = main if main in accepted else (accepted[0] if accepted else None)
    if use:
        result["session_via"] = use
        result["session"] = session(url_for(password=candidates[use], timeout=timeout, **target), timeout)
    elif stored_url is not None and result.get("stored_url", {}).get("ok"):
        # the credential migrate uses (dbtarget.credential): its revision is what migrate reads too
        result["session_via"] = STORED
        result["session"] = session(stored_url, timeout, target.get("sslrootcert"))
    return result
