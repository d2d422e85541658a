"""The emulated Secret Manager, driven by the real google-cloud-secret-manager client over gRPC,
and deployctl's typed wrapper (cloud/secrets.py) with its error translation (cloud/errors.py)."""

from __future__ import annotations

import json
import logging
import secrets as _random
import socket

import grpc
import pytest
from google.api_core import exceptions as gexc

from deployctl import errors, redact
from deployctl.cloud.clients import Clients
from deployctl.cloud.crc32c import crc32c
from deployctl.cloud.policy import CallPolicy
from deployctl.cloud.secrets import SecretStore
from deployctl.emulator.rpc import RpcError
from deployctl.emulator.server import Emulator

AUTO = {"replication": {"automatic": {}}}


def _uid(prefix: str = "s") -> str:
    return f"{prefix}-{_random.token_hex(4)}"


@pytest.fixture()
def project() -> str:
    """A project of its own per test, so listings are exact while the emulator is shared."""
    return _uid("proj")


@pytest.fixture()
def sm(clients):
    return clients.secret_manager


@pytest.fixture()
def call(clients):
    return clients.policy.call


def _create(sm, call, project, secret_id=None, **secret):
    return sm.create_secret(request={"parent": f"projects/{project}", "secret_id": _uid() if secret_id is None else secret_id,
                                     "secret": {**AUTO, **secret}}, **call())


def _add(sm, call, parent, data: bytes):
    return sm.add_secret_version(request={"parent": parent, "payload": {"data": data}}, **call())


# --- the RPCs through the real client ----------------------------------------------------------------
def test_create_get_and_already_exists(sm, call, project):
    s = _create(sm, call, project, "db-password", labels={"team": "core"})
    assert s.name == f"projects/{project}/secrets/db-password"
    assert s.create_time is not None and s.etag
    got = sm.get_secret(name=s.name, **call())
    assert got.name == s.name and dict(got.labels) == {"team": "core"} and got.etag == s.etag
    assert "automatic" in got.replication
    with pytest.raises(gexc.AlreadyExists):
        _create(sm, call, project, "db-password")


def test_project_number_is_an_opaque_string(sm, call):
    s = _create(sm, call, "123456789012", _uid())
    assert s.name.startswith("projects/123456789012/secrets/")
    assert sm.get_secret(name=s.name, **call()).name == s.name


@pytest.mark.parametrize("bad_id", ["has space", "dot.ted", "", "x" * 256, "slash/y"])
def test_invalid_secret_id(sm, call, project, bad_id):
    with pytest.raises(gexc.InvalidArgument):
        _create(sm, call, project, bad_id)


def test_secret_id_at_the_length_limit_is_accepted(sm, call, project):
    assert _create(sm, call, project, "a_B-9" + "x" * 250).name.endswith("x" * 250)


def test_replication_is_required(sm, call, project):
    with pytest.raises(gexc.InvalidArgument, match="replication"):
        sm.create_secret(request={"parent": f"projects/{project}", "secret_id": "r", "secret": {}}, **call())


def test_not_found_everywhere(sm, call, project):
    missing = f"projects/{project}/secrets/nope"
    for fn, request in [
        (sm.get_secret, {"name": missing}),
        (sm.delete_secret, {"name": missing}),
        (sm.list_secret_versions, {"parent": missing}),
        (sm.add_secret_version, {"parent": missing, "payload": {"data": b"abcd"}}),
        (sm.access_secret_version, {"name": missing + "/versions/latest"}),
        (sm.get_secret_version, {"name": missing + "/versions/1"}),
    ]:
        with pytest.raises(gexc.NotFound):
            result = fn(request=request, **call())
            list(result) if fn is sm.list_secret_versions else None
    s = _create(sm, call, project)
    with pytest.raises(gexc.NotFound, match="no versions"):
        sm.access_secret_version(name=s.name + "/versions/latest", **call())
    _add(sm, call, s.name, b"v1-data")
    with pytest.raises(gexc.NotFound, match="versions/2"):
        sm.access_secret_version(name=s.name + "/versions/2", **call())


def test_list_secrets_pages(sm, call, project):
    names = sorted(_create(sm, call, project, f"p{i}").name for i in range(5))
    pager = sm.list_secrets(request={"parent": f"projects/{project}", "page_size": 2}, **call())
    pages = list(pager.pages)
    assert [len(p.secrets) for p in pages] == [2, 2, 1]
    assert pages[0].total_size == 5 and pages[-1].next_page_token == ""
    assert [s.name for p in pages for s in p.secrets] == names
    everything = sm.list_secrets(request={"parent": f"projects/{project}"}, **call())
    assert [s.name for s in everything] == names
    with pytest.raises(gexc.InvalidArgument):
        list(sm.list_secrets(request={"parent": f"projects/{project}", "page_token": "%%%"}, **call()))


def test_versions_add_get_list_and_access(sm, call, project):
    s = _create(sm, call, project)
    datas = [b"first-value", b"second\x00binary\xff", b"third-value\n"]
    added = [_add(sm, call, s.name, d) for d in datas]
    assert [v.name for v in added] == [f"{s.name}/versions/{n}" for n in (1, 2, 3)]
    assert all(v.state.name == "ENABLED" and v.create_time and v.etag for v in added)

    listed = list(sm.list_secret_versions(request={"parent": s.name, "page_size": 2}, **call()))
    assert [v.name for v in listed] == [a.name for a in reversed(added)]  # newest first, across pages
    assert sm.get_secret_version(name=s.name + "/versions/latest", **call()).name == added[2].name

    for n, data in enumerate(datas, start=1):
        r = sm.access_secret_version(name=f"{s.name}/versions/{n}", **call())
        assert r.name == f"{s.name}/versions/{n}" and r.payload.data == data
        assert r.payload.data_crc32c == crc32c(data)
    latest = sm.access_secret_version(name=s.name + "/versions/latest", **call())
    assert latest.name == added[2].name  # the alias resolves to the number, as Google answers
    assert latest.payload.data == datas[2]


def test_crc32c_matches_the_castagnoli_check_value():
    assert crc32c(b"123456789") == 0xE3069283
    assert crc32c(b"") == 0


def test_payload_limits_and_checksum(sm, call, project):
    s = _create(sm, call, project)
    assert _add(sm, call, s.name, b"x" * 65536).name.endswith("/1")
    with pytest.raises(gexc.InvalidArgument, match="64|65536"):
        _add(sm, call, s.name, b"x" * 65537)
    with pytest.raises(gexc.InvalidArgument, match="[Cc]hecksum"):
        sm.add_secret_version(request={"parent": s.name, "payload": {"data": b"abcd", "data_crc32c": 1}},
                              **call())
    ok = sm.add_secret_version(request={"parent": s.name,
                                        "payload": {"data": b"abcd", "data_crc32c": crc32c(b"abcd")}}, **call())
    assert ok.client_specified_payload_checksum


def test_disable_enable_destroy(sm, call, project, emulator):
    s = _create(sm, call, project)
    v1, v2 = _add(sm, call, s.name, b"old-value"), _add(sm, call, s.name, b"new-value")

    disabled = sm.disable_secret_version(name=v2.name, **call())
    assert disabled.state.name == "DISABLED" and disabled.etag != v2.etag
    with pytest.raises(gexc.FailedPrecondition, match="DISABLED"):
        sm.access_secret_version(name=v2.name, **call())
    # Google's `latest` is the newest version whatever its state: it does not fall back to v1.
    with pytest.raises(gexc.FailedPrecondition, match=r"versions/2\] is in DISABLED"):
        sm.access_secret_version(name=s.name + "/versions/latest", **call())
    assert sm.access_secret_version(name=v1.name, **call()).payload.data == b"old-value"

    assert sm.enable_secret_version(name=v2.name, **call()).state.name == "ENABLED"
    assert sm.access_secret_version(name=s.name + "/versions/latest", **call()).payload.data == b"new-value"

    destroyed = sm.destroy_secret_version(name=v2.name, **call())
    assert destroyed.state.name == "DESTROYED" and destroyed.destroy_time is not None
    with pytest.raises(gexc.FailedPrecondition, match="DESTROYED"):
        sm.access_secret_version(name=v2.name, **call())
    with pytest.raises(gexc.FailedPrecondition):
        sm.enable_secret_version(name=v2.name, **call())
    record = emulator.store.get("secretmanager_versions", v2.name)
    assert record is not None and "data" not in record  # the value itself is wiped, the record stays
    assert "new-value" not in (emulator.state_dir / "state" / "secretmanager_versions.json").read_text()
    # Numbers are never reused.
    assert _add(sm, call, s.name, b"third-value").name.endswith("/versions/3")


def test_delete_secret_with_etag(sm, call, project):
    s = _create(sm, call, project)
    v = _add(sm, call, s.name, b"gone-soon")
    with pytest.raises(gexc.Aborted):
        sm.delete_secret(request={"name": s.name, "etag": '"stale"'}, **call())
    sm.delete_secret(request={"name": s.name, "etag": s.etag}, **call())
    with pytest.raises(gexc.NotFound):
        sm.get_secret_version(name=v.name, **call())
    again = _create(sm, call, project, s.name.rsplit("/", 1)[1])
    assert _add(sm, call, again.name, b"fresh-value").name.endswith("/versions/1")


def test_in_process_access_for_other_components(emulator, sm, call, project):
    s = _create(sm, call, project)
    _add(sm, call, s.name, b"one-value")
    _add(sm, call, s.name, b"two-value")
    component = emulator.component("secretmanager")
    assert component.access(s.name + "/versions/latest") == b"two-value"
    assert component.access(s.name + "/versions/1") == b"one-value"
    sm.disable_secret_version(name=s.name + "/versions/2", **call())
    with pytest.raises(RpcError) as info:
        component.access(s.name + "/versions/latest")
    assert info.value.code == grpc.StatusCode.FAILED_PRECONDITION
    with pytest.raises(RpcError) as info:
        component.access(f"projects/{project}/secrets/missing/versions/latest")
    assert info.value.code == grpc.StatusCode.NOT_FOUND


def test_state_survives_a_restart(tmp_path):
    payload = b"persisted-" + _random.token_hex(8).encode()
    with Emulator(tmp_path) as first:
        c = Clients(emulator_host=first.address)
        try:
            s = _create(c.secret_manager, c.policy.call, "persist", "kept")
            _add(c.secret_manager, c.policy.call, s.name, payload)
            c.secret_manager.disable_secret_version(
                name=_add(c.secret_manager, c.policy.call, s.name, b"second").name, **c.policy.call())
        finally:
            c.close()
    with Emulator(tmp_path) as second:
        c = Clients(emulator_host=second.address)
        try:
            sm = c.secret_manager
            assert sm.get_secret(name=s.name, **c.policy.call()).create_time == s.create_time
            assert sm.access_secret_version(name=s.name + "/versions/1", **c.policy.call()).payload.data == payload
            assert [v.state.name for v in sm.list_secret_versions(parent=s.name, **c.policy.call())] == [
                "DISABLED", "ENABLED"]
            assert _add(sm, c.policy.call, s.name, b"third").name.endswith("/versions/3")
        finally:
            c.close()


def test_payload_never_in_the_emulator_log(sm, call, project, caplog):
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="deployctl")  # another test may have quietened it
    value = "pw-" + _random.token_urlsafe(12)
    redact.register(value)
    s = _create(sm, call, project)
    v = _add(sm, call, s.name, value.encode())
    assert sm.access_secret_version(name=v.name, **call()).payload.data == value.encode()
    with pytest.raises(gexc.InvalidArgument):  # an error about the payload must not echo it
        _add(sm, call, s.name, value.encode() * 6000)
    sm.destroy_secret_version(name=v.name, **call())
    text = caplog.text
    assert v.name in text  # the emulator did log these calls...
    assert value not in text  # ...without the value


# --- cloud/secrets.py and cloud/errors.py ---------------------------------------------------------
@pytest.fixture()
def store(clients, project) -> SecretStore:
    return SecretStore(clients, project)


def test_store_round_trip(store):
    secret = store.create_secret("api-key", labels={"env": "test"})
    assert secret.id == "api-key" and secret.labels == {"env": "test"} and secret.create_time
    assert store.create_secret("api-key", exist_ok=True).name == secret.name
    with pytest.raises(errors.AlreadyExists):
        store.create_secret("api-key")
    assert [s.id for s in store.list_secrets()] == ["api-key"]
    assert store.get_secret("api-key").name == secret.name

    value = "k3y-" + _random.token_hex(8)
    v1 = store.add_version("api-key", value)
    v2 = store.add_version("api-key", b"bytes-value\n")
    assert (v1.number, v1.state, v2.number) == (1, "ENABLED", 2)
    assert redact.redact(f"the key is {value}") == f"the key is {redact.MASK}"

    got = store.access("api-key", 1)
    assert (got.version, got.text) == (1, value) and not got.has_trailing_newline
    assert value not in repr(got) and got.fingerprint == redact.fingerprint(value)
    latest = store.access("api-key")
    assert latest.version == 2 and latest.data == b"bytes-value\n" and latest.has_trailing_newline

    assert store.disable("api-key", 2).state == "DISABLED"
    assert [(v.number, v.state) for v in store.versions("api-key")] == [(2, "DISABLED"), (1, "ENABLED")]
    with pytest.raises(errors.CloudError) as info:
        store.access("api-key")
    assert info.value.code == "failed-precondition" and "versions/latest" in info.value.message
    assert store.enable("api-key", 2).state == "ENABLED"
    assert store.destroy("api-key", 1).state == "DESTROYED"
    assert store.get_version("api-key", 1).state == "DESTROYED"
    store.delete_secret("api-key")
    assert store.list_secrets() == []


def test_store_not_found_names_resource_and_config_entry(store, project):
    with pytest.raises(errors.NotFound) as info:
        store.access("missing-key", config_ref="services.api.secrets.SIGNING_KEY")
    err = info.value
    assert f"projects/{project}/secrets/missing-key/versions/latest" in err.message
    assert "services.api.secrets.SIGNING_KEY" in err.message and "services.api.secrets.SIGNING_KEY" in err.hint
    assert isinstance(err.__cause__, gexc.NotFound)


def test_permission_denied_names_the_role(store, project, emulator):
    store.create_secret("x")
    store.add_version("x", "denied-value")
    faults = emulator.state_dir / "faults.json"
    faults.write_text(json.dumps({"permission_denied": [f"projects/{project}/secrets/x"]}))
    try:
        with pytest.raises(errors.PermissionDenied) as info:
            store.access("x")
    finally:
        faults.unlink()
    err = info.value
    assert "roles/secretmanager.secretAccessor" in err.message + err.hint
    assert "secretmanager.versions.access" in err.message
    assert f"projects/{project}/secrets/x" in err.message
    assert store.access("x").text == "denied-value"  # the fault is gone with the file


def test_unreachable_endpoint_is_bounded_and_says_what_to_do():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    c = Clients(emulator_host=f"127.0.0.1:{port}", policy=CallPolicy(attempt_timeout=0.3, deadline=0.8))
    try:
        with pytest.raises(errors.Unreachable) as info:
            SecretStore(c, "p").list_secrets()
    finally:
        c.close()
    assert "deployctl local up" in info.value.hint


# --- a version's state change is a mutation (review 2, trust finding 9) -----------------------------------------
def _drop_replies(emulator, method: str, code: str) -> None:
    (emulator.state_dir / "faults.json").write_text(json.dumps(
        {"drop_response_rate": 1.0, "drop_response_methods": [method], "drop_response_code": code}))


def test_a_state_change_whose_reply_is_lost_is_not_resent(emulator, project):
    """DEADLINE_EXCEEDED after the server acted: one attempt, and the error says to check whether it was made
    (the read policy resent it until the deadline and said nothing of the kind)."""
    c = Clients(emulator_host=emulator.address, policy=CallPolicy(attempt_timeout=1.0, deadline=4.0))
    store = SecretStore(c, project)
    try:
        store.create_secret("k")
        store.add_version("k", "v1")
        _drop_replies(emulator, "DisableSecretVersion", "DEADLINE_EXCEEDED")
        try:
            with pytest.raises(errors.DeployctlError) as info:
                store.disable("k", 1)
        finally:
            (emulator.state_dir / "faults.json").unlink()
        assert "check whether it was made" in info.value.hint, info.value
        assert store.get_version("k", 1).state == "DISABLED"
    finally:
        c.close()


def test_a_destroy_resent_by_our_own_retry_reads_the_version_back(store, emulator):
    """The first attempt destroyed the version but its reply was lost as a quota refusal, which the policy resends;
    the resend meets FAILED_PRECONDITION (already destroyed): reported as done, not as someone else's state."""
    store.create_secret("k")
    store.add_version("k", "v1")
    _drop_replies(emulator, "DestroySecretVersion", "RESOURCE_EXHAUSTED")
    try:
        destroyed = store.destroy("k", 1)
    finally:
        (emulator.state_dir / "faults.json").unlink()
    assert destroyed.state == "DESTROYED" and destroyed.number == 1
    with pytest.raises(errors.CloudError) as info:  # asked again by the user: the refusal stands
        store.destroy("k", 1)
    assert info.value.code == "failed-precondition" and "DESTROYED" in info.value.message
