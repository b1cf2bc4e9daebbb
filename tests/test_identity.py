"""Identity end to end: who a session belongs to in each mode, against real Redis and PostgreSQL.

A JWT user keeps their session across token refreshes; another user, a forged or expired token,
or another credential secret never reaches it.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
from aiohttp import web

from sidecar import jwtkeys
from sidecar.config import IdentityConfig, JwtConfig
from sidecar.errors import BadRequest
from sidecar.identity import Identity, credential_tenant, resolve_identity
from tests.harness import ADMIN_TOKEN, FakeUpstream
from tests.harness.waiting import pg_fetch, wait_for_rows
from tests.identity_keys import HS_SECRET, KeyPair, bearer, claims, hs_token, jwks

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


async def ask(
    http: aiohttp.ClientSession, url: str, query: str, sid: str, headers: dict[str, str]
) -> aiohttp.ClientResponse:
    async with http.post(
        f"{url}/api/tasks", json={"query": query, "session_id": sid}, headers=headers
    ) as r:
        await r.read()
        return r


def last_history(upstream: FakeUpstream) -> list[str] | None:
    """The contents of the history the sidecar injected into the last turn (None: none)."""
    body = upstream.requests_to("/api/tasks")[-1].json
    if "history" not in body:
        return None
    return [m["content"] for m in body["history"]]


def hs_config() -> dict[str, Any]:
    return {"mode": "jwt", "jwt": {"secret": HS_SECRET, "algorithms": ["HS256"]}}


# --- units: the identity of a set of headers ----------------------------------------------------


def test_credential_tenants_are_keyed_by_the_secret_and_never_the_plain_hash() -> None:
    key = "Bearer sk-live-123"
    one = resolve_identity({"Authorization": key}, IdentityConfig(secret="one"))
    two = resolve_identity({"Authorization": key}, IdentityConfig(secret="two"))
    unset = resolve_identity({"X-API-Key": key}, IdentityConfig())
    assert len({one.tenant, two.tenant, unset.tenant}) == 3
    plain = hashlib.sha256(key.encode()).hexdigest()
    for identity in (one, two, unset):
        assert identity.user is None
        assert key not in identity.tenant
        assert plain[:32] not in identity.tenant
    assert resolve_identity({}, IdentityConfig()).tenant == "anonymous"


def test_scopes_read_back_one_way_only() -> None:
    # An issuer URL as tenant with a user, and a tenant that happens to spell the same string.
    with_user = Identity("https://idp.example.com", "alice")
    without = Identity("https://idp.example.com/alice")
    assert with_user.scope != without.scope
    assert Identity("a", "b/c").scope != Identity("a/b", "c").scope
    assert Identity("acme", "sam").scope == "acme/sam"
    assert Identity("key-abc").scope == "key-abc"


def test_headers_mode_validates_and_falls_back_to_the_credential() -> None:
    cfg = IdentityConfig(mode="headers", secret="s")
    assert resolve_identity({"X-Tenant-ID": "acme", "X-User-ID": "sam"}, cfg) == Identity(
        "acme", "sam"
    )
    fallback = resolve_identity({"Authorization": "k", "X-User-ID": "sam"}, cfg)
    assert fallback == Identity(credential_tenant("k", "s"), "sam")
    with pytest.raises(BadRequest):
        resolve_identity({"X-Tenant-ID": "a\tb"}, cfg)
    # Outside headers mode they mean nothing.
    assert resolve_identity({"X-Tenant-ID": "acme"}, IdentityConfig()).tenant == "anonymous"


def test_jwt_claims_that_cannot_name_a_tenant_or_user_are_not_used() -> None:
    cfg = IdentityConfig(mode="jwt", jwt=JwtConfig(secret=HS_SECRET, algorithms=("HS256",)))
    ok = resolve_identity(bearer(hs_token(claims("alice"))), cfg)
    assert ok == Identity("acme", "alice")
    from_iss = resolve_identity(bearer(hs_token(claims("bob", tenant=None, iss="idp"))), cfg)
    assert from_iss == Identity("idp", "bob")
    nul_user = resolve_identity(bearer(hs_token(claims("a\x00b"))), cfg)
    assert nul_user == Identity("acme", None)
    no_tenant = resolve_identity(bearer(hs_token(claims("carol", tenant=None))), cfg)
    assert no_tenant.invalid
    # "none" is never an algorithm, whatever the config says.
    unsigned = resolve_identity(bearer(jwt.encode(claims("eve"), None, algorithm="none")), cfg)
    assert unsigned.invalid


def hs256_with_key(body: dict[str, Any], key: bytes) -> str:
    """An HS256 token made by hand (PyJWT refuses to use a PEM key as an HMAC secret)."""

    def b64(data: bytes) -> bytes:
        return base64.urlsafe_b64encode(data).rstrip(b"=")

    signing = b64(b'{"alg":"HS256","typ":"JWT"}') + b"." + b64(json.dumps(body).encode())
    signature = hmac.new(key, signing, hashlib.sha256).digest()
    return (signing + b"." + b64(signature)).decode()


def test_a_pem_public_key_verifies_its_own_tokens_and_is_never_an_hmac_secret(
    tmp_path: Path,
) -> None:
    pair = KeyPair("pem", "EC")
    path = tmp_path / "public.pem"
    path.write_bytes(pair.public_pem)
    cfg = IdentityConfig(mode="jwt", jwt=JwtConfig(public_key_file=str(path)))
    assert resolve_identity(bearer(pair.token(claims("ann"))), cfg) == Identity("acme", "ann")
    # The classic confusion: a token signed with HS256 keyed by the public key's own text.
    forged = hs256_with_key(claims("ann"), pair.public_pem)
    assert resolve_identity(bearer(forged), cfg).invalid
    other = KeyPair("pem", "EC").token(claims("ann"))
    assert resolve_identity(bearer(other), cfg).invalid


# --- jwt end to end -----------------------------------------------------------------------------


async def test_hs256_user_keeps_history_across_a_token_refresh(
    start_sidecar: Any, http: aiohttp.ClientSession, upstream: FakeUpstream, pg_dsn: str
) -> None:
    sc = await start_sidecar(identity=hs_config())
    first = hs_token(claims("alice", iat=int(time.time()) - 5))
    r = await ask(http, sc.url, "I live in Paris", "chat", bearer(first))
    assert r.status == 200
    assert "X-Sidecar-Degraded" not in r.headers
    # Thirty minutes later the gateway issued a new token: same user, same session.
    refreshed = hs_token(claims("alice", ttl_s=1800))
    assert refreshed != first
    assert (await ask(http, sc.url, "and tomorrow?", "chat", bearer(refreshed))).status == 200
    assert last_history(upstream)[:1] == ["I live in Paris"]

    # Another sub of the same tenant, same session id: another history.
    assert (await ask(http, sc.url, "hello", "chat", bearer(hs_token(claims("bob"))))).status == 200
    assert last_history(upstream) == []

    await wait_for_rows(pg_dsn, "SELECT count(*) FROM messages", 6)
    rows = await pg_fetch(
        pg_dsn, "SELECT tenant, user_id, message_count FROM sessions ORDER BY tenant"
    )
    assert [(r["tenant"], r["user_id"], r["message_count"]) for r in rows] == [
        ("acme/alice", "alice", 4),
        ("acme/bob", "bob", 2),
    ]
    # The admin API: the bare tenant plus ?user=.
    url = f"{sc.url}/_sidecar/sessions/acme/chat"
    async with http.get(url, params={"user": "alice"}, headers=ADMIN) as r:
        assert r.status == 200
        body = await r.json()
    assert (body["tenant"], body["user_id"], body["message_count"]) == ("acme", "alice", 4)
    async with http.get(url, headers=ADMIN) as r:
        assert r.status == 404


@pytest.mark.parametrize(
    "token",
    [
        pytest.param(
            hs_token(claims("alice"), secret="not-the-secret-but-as-long-as-it"), id="bad signature"
        ),
        pytest.param(hs_token(claims("alice", ttl_s=-60)), id="expired"),
        pytest.param(hs_token(claims("alice", nbf=int(time.time()) + 3600)), id="not yet valid"),
        pytest.param("not.a.jwt", id="garbage"),
    ],
)
async def test_a_token_that_fails_verification_gets_no_memory(
    start_sidecar: Any,
    http: aiohttp.ClientSession,
    upstream: FakeUpstream,
    pg_dsn: str,
    token: str,
) -> None:
    sc = await start_sidecar(identity=hs_config())
    good = bearer(hs_token(claims("alice")))
    assert (await ask(http, sc.url, "my secret plan", "chat", good)).status == 200

    r = await ask(http, sc.url, "what was my plan?", "chat", bearer(token))
    assert r.status == 200
    assert r.headers["X-Sidecar-Degraded"] == "identity"
    forwarded = upstream.requests_to("/api/tasks")[-1]
    # Untouched: the body as the client sent it, no history, no session id made up.
    assert forwarded.json == {"query": "what was my plan?", "session_id": "chat"}

    # Nothing of it was recorded: alice's session still holds her one turn.
    assert (await ask(http, sc.url, "again", "chat", good)).status == 200
    assert last_history(upstream) == ["my secret plan", "answer to: my secret plan"]

    rejecting = await start_sidecar(
        identity={**hs_config(), "jwt": {**hs_config()["jwt"], "reject_invalid": True}}
    )
    async with http.post(
        f"{rejecting.url}/api/tasks",
        json={"query": "q", "session_id": "chat"},
        headers=bearer(token),
    ) as r:
        assert r.status == 401
        assert (await r.json())["error"]["code"] == "invalid_token"
    await wait_for_rows(pg_dsn, "SELECT count(*) FROM messages", 4)


async def test_rs256_user_via_a_jwks_file_keeps_history_across_a_refresh(
    start_sidecar: Any, http: aiohttp.ClientSession, upstream: FakeUpstream, tmp_path: Path
) -> None:
    signer, other = KeyPair("k1"), KeyPair("k2", "EC")
    path = tmp_path / "jwks.json"
    path.write_bytes(jwks(signer, other))
    sc = await start_sidecar(
        identity={
            "mode": "jwt",
            "jwt": {"jwks_file": str(path), "audience": "agents", "issuer": "https://idp"},
        }
    )

    def token(sub: str, **extra: Any) -> dict[str, str]:
        body = claims(sub, aud="agents", iss="https://idp", **extra)
        return bearer(signer.token(body))

    assert (await ask(http, sc.url, "remember 42", "s", token("u1"))).status == 200
    assert (await ask(http, sc.url, "what number?", "s", token("u1", jti="2"))).status == 200
    assert last_history(upstream)[:1] == ["remember 42"]
    # The EC key of the set verifies its own tokens.
    r = await ask(
        http, sc.url, "hi", "s", bearer(other.token(claims("u2", aud="agents", iss="https://idp")))
    )
    assert (r.status, last_history(upstream)) == (200, [])
    # Wrong audience, wrong issuer, a key the set does not hold: no memory.
    for bad in (
        bearer(signer.token(claims("u1", aud="others", iss="https://idp"))),
        bearer(signer.token(claims("u1", aud="agents", iss="https://evil"))),
        bearer(KeyPair("k1").token(claims("u1", aud="agents", iss="https://idp"))),
    ):
        r = await ask(http, sc.url, "leak?", "s", bad)
        assert r.headers["X-Sidecar-Degraded"] == "identity"
        assert last_history(upstream) is None


# --- a JWKS URL -----------------------------------------------------------------------------------


class JwksServer:
    """An identity provider's JWKS endpoint whose keys can be rotated; counts its fetches."""

    def __init__(self, *pairs: KeyPair) -> None:
        self.pairs = list(pairs)
        self.fetches = 0
        self.stall = False
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def _jwks(self, request: web.Request) -> web.Response:
        self.fetches += 1
        if self.stall:
            await asyncio.sleep(30)
        return web.Response(body=jwks(*self.pairs), content_type="application/json")

    async def __aenter__(self) -> JwksServer:
        app = web.Application()
        app.router.add_get("/.well-known/jwks.json", self._jwks)
        self.runner = web.AppRunner(app, shutdown_timeout=0.1)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}/.well-known/jwks.json"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.runner is not None
        await self.runner.cleanup()


@pytest.fixture
async def idp() -> AsyncIterator[JwksServer]:
    async with JwksServer(KeyPair("2026-a")) as server:
        yield server


def url_config(idp: JwksServer) -> dict[str, Any]:
    return {"mode": "jwt", "jwt": {"jwks_url": idp.url, "jwks_timeout_s": 0.5}}


async def test_jwks_url_keys_are_cached_and_fetched_again_for_a_rotated_kid(
    start_sidecar: Any,
    http: aiohttp.ClientSession,
    upstream: FakeUpstream,
    idp: JwksServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sc = await start_sidecar(identity=url_config(idp))
    old = idp.pairs[0]
    for query in ("one", "two", "three"):
        r = await ask(http, sc.url, query, "s", bearer(old.token(claims("u"))))
        assert (r.status, "X-Sidecar-Degraded" in r.headers) == (200, False)
    assert idp.fetches == 1  # cached
    assert last_history(upstream)[0::2] == ["one", "two"]

    # The provider rotates its key. A minute has passed since the last fetch (here: the
    # refresh interval is shortened instead of waiting it out).
    new = KeyPair("2026-b")
    idp.pairs = [new]
    monkeypatch.setattr(jwtkeys, "REFRESH_INTERVAL_S", 0.0)
    r = await ask(http, sc.url, "four", "s", bearer(new.token(claims("u"))))
    assert "X-Sidecar-Degraded" not in r.headers
    assert idp.fetches == 2
    assert last_history(upstream)[0::2] == ["one", "two", "three"]


async def test_unknown_kids_ask_the_jwks_url_at_most_once_a_minute(
    start_sidecar: Any, http: aiohttp.ClientSession, idp: JwksServer
) -> None:
    sc = await start_sidecar(identity=url_config(idp))
    assert (
        await ask(http, sc.url, "q", "s", bearer(idp.pairs[0].token(claims("u"))))
    ).status == 200
    forger = KeyPair("made-up")
    for i in range(20):
        r = await ask(http, sc.url, "q", "s", bearer(forger.token(claims("u"), kid=f"kid-{i}")))
        assert r.headers["X-Sidecar-Degraded"] == "identity"
    # The keys were loaded less than a minute ago: twenty unknown kids asked nothing more.
    assert idp.fetches == 1


async def test_a_stalled_jwks_url_costs_its_timeout_not_the_request(
    start_sidecar: Any, http: aiohttp.ClientSession, idp: JwksServer
) -> None:
    idp.stall = True
    sc = await start_sidecar(identity=url_config(idp))
    r = await ask(http, sc.url, "q", "s", bearer(idp.pairs[0].token(claims("u"))))
    assert (r.status, r.headers["X-Sidecar-Degraded"]) == (200, "identity")


# --- credential and headers end to end ----------------------------------------------------------


async def test_one_api_key_under_two_secrets_is_two_tenants(
    start_sidecar: Any, http: aiohttp.ClientSession, upstream: FakeUpstream, pg_dsn: str
) -> None:
    key = "Bearer sk-shared-key"
    first = await start_sidecar(identity={"secret": "secret-one"})
    assert (await ask(http, first.url, "remember me", "s", {"Authorization": key})).status == 200
    second = await start_sidecar(identity={"secret": "secret-two"})
    assert (await ask(http, second.url, "who am I?", "s", {"Authorization": key})).status == 200
    assert last_history(upstream) == []
    await wait_for_rows(pg_dsn, "SELECT count(*) FROM sessions", 2)
    tenants = {r["tenant"] for r in await pg_fetch(pg_dsn, "SELECT tenant FROM sessions")}
    assert tenants == {credential_tenant(key, "secret-one"), credential_tenant(key, "secret-two")}
    plain = hashlib.sha256(key.encode()).hexdigest()
    for tenant in tenants:
        assert "sk-shared-key" not in tenant
        assert plain[:32] not in tenant


async def test_headers_mode_users_of_one_tenant_never_share_a_session(
    start_sidecar: Any, http: aiohttp.ClientSession, upstream: FakeUpstream, pg_dsn: str
) -> None:
    sc = await start_sidecar(identity={"mode": "headers"})
    sam = {"X-Tenant-ID": "acme", "X-User-ID": "sam"}
    kim = {"X-Tenant-ID": "acme", "X-User-ID": "kim"}
    assert (await ask(http, sc.url, "sam's note", "shared", sam)).status == 200
    assert (await ask(http, sc.url, "kim here", "shared", kim)).status == 200
    assert last_history(upstream) == []
    assert (await ask(http, sc.url, "again", "shared", sam)).status == 200
    assert last_history(upstream)[:1] == ["sam's note"]
    await wait_for_rows(pg_dsn, "SELECT count(*) FROM sessions WHERE user_id IS NOT NULL", 2)


async def test_an_async_task_is_recorded_for_its_user_whichever_token_reads_it(
    start_sidecar: Any, http: aiohttp.ClientSession, upstream: FakeUpstream, pg_dsn: str
) -> None:
    upstream.tasks_mode = "async"
    upstream.tasks_async_polls = 1
    sc = await start_sidecar(identity=hs_config())
    async with http.post(
        f"{sc.url}/api/tasks",
        json={"query": "long job", "session_id": "jobs"},
        headers=bearer(hs_token(claims("alice"))),
    ) as r:
        assert r.status == 202
        task_id = (await r.json())["task_id"]
    poll = f"{sc.url}/api/tasks/{task_id}"
    # A forged token reads the result through, and records nothing.
    async with http.get(poll, headers=bearer(hs_token(claims("alice"), secret="x" * 40))) as r:
        assert (r.status, r.headers["X-Sidecar-Degraded"]) == (200, "identity")
    # Alice, with a refreshed token: her turn is recorded in her session.
    async with http.get(poll, headers=bearer(hs_token(claims("alice", jti="new")))) as r:
        assert r.status == 200
        assert "X-Sidecar-Degraded" not in r.headers
    await wait_for_rows(pg_dsn, "SELECT count(*) FROM messages", 2)
    rows = await pg_fetch(pg_dsn, "SELECT tenant, user_id FROM sessions")
    assert [(r["tenant"], r["user_id"]) for r in rows] == [("acme/alice", "alice")]
