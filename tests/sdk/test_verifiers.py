"""IntrospectionVerifier against a scripted kbai (httpx MockTransport), and LocalVerifier in-process.

What goes over the wire, how answers map to identities and public errors, that nothing gets
through when kbai cannot be asked, and the optional positive cache with its bounds.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from datetime import UTC, datetime
from urllib.parse import parse_qs

import httpx
import pytest

from kbai import errors
from kbai.config import Settings
from kbai.sdk import Failure, Identity, IntrospectionVerifier, LocalVerifier
from kbai.services import Services
from tests.conftest import FAST_ARGON2, OPERATOR, build_world, run_coroutine
from tests.sdk.helpers import PERMISSIONS, Secret

URL = "http://kbai.test/api/v1/introspect"
TOKEN = "kbai_pk_" + "5" * 64
OTHER = "kbai_pk_" + "6" * 64
ACTIVE = {
    "active": True,
    "scope": "contacts.read users.read",
    "client_id": "kbai_sc_1",
    "sub": "12",
    "username": "dev@acme.test",
    "tenant": "3",
    "token_id": 44,
    "iat": 1_760_000_000,
    "token_type": "Bearer",
}


class Kbai:
    """A scripted introspection endpoint that records what it was sent."""

    def __init__(self, answer: Callable[[httpx.Request], httpx.Response]) -> None:
        self.answer = answer
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.answer(request)


def verifier(kbai: Kbai, **kw: object) -> IntrospectionVerifier:
    return IntrospectionVerifier(URL, "kbai_sc_1", "s3cret", transport=httpx.MockTransport(kbai), **kw)  # type: ignore[arg-type]


def run(coro):
    return run_coroutine(coro)


def verify_all(v: IntrospectionVerifier, *tokens: str) -> list[Identity | Failure]:
    async def go() -> list[Identity | Failure]:
        try:
            return [await v.verify(t) for t in tokens]
        finally:
            await v.stop()

    return run(go())


def test_active_answer_becomes_an_identity_and_the_request_is_rfc7662() -> None:
    kbai = Kbai(lambda _: httpx.Response(200, json={**ACTIVE, "exp": 1_900_000_000}))
    [who] = verify_all(verifier(kbai), TOKEN)
    assert who == Identity(
        user_id=12,
        email="dev@acme.test",
        tenant_id=3,
        scopes=frozenset({"contacts.read", "users.read"}),
        token_id=44,
        expires_at=datetime.fromtimestamp(1_900_000_000, UTC),
    )
    [sent] = kbai.requests
    assert sent.method == "POST" and str(sent.url) == URL
    assert sent.headers["content-type"] == "application/x-www-form-urlencoded"
    assert parse_qs(sent.content.decode()) == {"token": [TOKEN]}
    assert sent.headers["authorization"] == "Basic " + base64.b64encode(b"kbai_sc_1:s3cret").decode()


def test_inactive_answer_is_401_invalid_token() -> None:
    [result] = verify_all(verifier(Kbai(lambda _: httpx.Response(200, json={"active": False}))), TOKEN)
    assert isinstance(result, Failure)
    assert (result.status, result.code) == (401, "invalid_token")


def test_malformed_token_is_refused_without_asking_kbai() -> None:
    kbai = Kbai(lambda _: httpx.Response(200, json=ACTIVE))
    results = verify_all(verifier(kbai), "kbai_pk_123", TOKEN.upper(), "", " " + TOKEN)
    assert all(isinstance(r, Failure) and r.error.message == errors.for_outcome("malformed").message for r in results)
    assert kbai.requests == []


def _raise(exc: Exception) -> Callable[[httpx.Request], httpx.Response]:
    def answer(_: httpx.Request) -> httpx.Response:
        raise exc

    return answer


@pytest.mark.parametrize(
    "answer",
    [
        _raise(httpx.ConnectError("connection refused")),
        _raise(httpx.ReadTimeout("timed out")),
        lambda _: httpx.Response(401, json={"error": {"code": "invalid_client", "message": "no"}}),
        lambda _: httpx.Response(500, text="boom"),
        lambda _: httpx.Response(429),
        lambda _: httpx.Response(200, text="<html>not json</html>"),
        lambda _: httpx.Response(200, json={"active": "yes"}),
        lambda _: httpx.Response(200, json={"active": True, "scope": "contacts.read"}),  # no sub/tenant/token_id
        lambda _: httpx.Response(200, json={**ACTIVE, "sub": None}),
        lambda _: httpx.Response(200, json={**ACTIVE, "exp": "soon"}),
        lambda _: httpx.Response(200, json=[1, 2]),
    ],
    ids=[
        "refused",
        "timeout",
        "bad-credential",
        "500",
        "429",
        "html",
        "active-not-bool",
        "missing-fields",
        "null-sub",
        "bad-exp",
        "not-an-object",
    ],
)
def test_anything_but_a_clear_answer_fails_closed_with_503(
    answer: Callable[[httpx.Request], httpx.Response], caplog: pytest.LogCaptureFixture
) -> None:
    [result] = verify_all(verifier(Kbai(answer)), TOKEN)
    assert isinstance(result, Failure)
    assert (result.status, result.code) == (503, "auth_unavailable")
    assert TOKEN not in caplog.text and "s3cret" not in caplog.text


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def test_no_cache_by_default_every_request_asks_kbai() -> None:
    kbai = Kbai(lambda _: httpx.Response(200, json=ACTIVE))
    verify_all(verifier(kbai), TOKEN, TOKEN, TOKEN)
    assert len(kbai.requests) == 3


def test_cache_keeps_positive_answers_for_cache_seconds_only() -> None:
    clock = Clock()
    answers = [ACTIVE, ACTIVE, {"active": False}, {"active": False}]
    kbai = Kbai(lambda _: httpx.Response(200, json=answers[len(kbai.requests) - 1]))
    v = verifier(kbai, cache_seconds=5, clock=clock)

    async def go() -> list[str]:
        seen = []
        for step in (0, 0, 4.9, 0.2, 5.1, 0):
            clock.now += step
            result = await v.verify(TOKEN)
            seen.append(f"{len(kbai.requests)}:{'ok' if isinstance(result, Identity) else result.code}")
        await v.stop()
        return seen

    # asked; cached; still cached at 4.9 s; stale at 5.1 s: asked; stale again: asked, now revoked;
    # a refusal is never cached: asked again.
    assert run(go()) == ["1:ok", "1:ok", "1:ok", "2:ok", "3:invalid_token", "4:invalid_token"]


def test_cache_never_outlives_the_token_and_refusals_are_never_cached() -> None:
    clock = Clock()
    kbai = Kbai(
        lambda r: httpx.Response(
            200, json={**ACTIVE, "exp": int(clock.now) + 2} if TOKEN in r.content.decode() else {"active": False}
        )
    )
    v = verifier(kbai, cache_seconds=60, clock=clock)

    async def go() -> None:
        assert isinstance(await v.verify(TOKEN), Identity)
        clock.now += 1
        assert isinstance(await v.verify(TOKEN), Identity)  # cached
        clock.now += 1.5
        await v.verify(TOKEN)  # past exp: asks again
        assert isinstance(await v.verify(OTHER), Failure)
        assert isinstance(await v.verify(OTHER), Failure)
        await v.stop()

    run(go())
    assert len(kbai.requests) == 4


def test_cache_is_bounded_and_keyed_by_digest() -> None:
    kbai = Kbai(lambda _: httpx.Response(200, json=ACTIVE))
    v = verifier(kbai, cache_seconds=30, max_cache_entries=2)
    tokens = [f"kbai_pk_{i:064x}" for i in range(5)]

    async def go() -> None:
        for t in tokens:
            await v.verify(t)
        assert len(v._cache) == 2
        assert not any(t in key for t in tokens for key in v._cache)
        await v.verify(tokens[-1])  # newest kept
        await v.verify(tokens[0])  # oldest evicted

    run(go())
    assert len(kbai.requests) == 6


@pytest.mark.parametrize("kw", [{"cache_seconds": -1}, {"cache_seconds": 301}, {"max_cache_entries": 0}])
def test_bad_settings_are_refused(kw: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        IntrospectionVerifier(URL, "id", "secret", **kw)  # type: ignore[arg-type]


def test_url_and_credential_are_required() -> None:
    for args in (("kbai.test/introspect", "id", "s"), (URL, "", "s"), (URL, "id", "")):
        with pytest.raises(ValueError):
            IntrospectionVerifier(*args)


# ---- LocalVerifier in-process (the real-process runs are in test_contacts_local.py) ----------------
def test_local_verifier_gives_identities_with_effective_scopes_and_kbai_errors(database_url: str) -> None:
    svc = Services.build(Settings(database_url=database_url, permissions_file=PERMISSIONS, **FAST_ARGON2))
    try:
        world = build_world(svc)
        svc.access.update_role(OPERATOR, world.dev_role_id, ["developer.manage_tokens", "contacts.read"])
        view, plaintext = svc.tokens.create(world.actor("dev@acme.test"), "t", ["contacts.read"])
        token = Secret(plaintext)
        v = LocalVerifier(services=svc)

        async def go() -> list[Identity | Failure]:
            await v.start()
            try:
                good = await v.verify(token)
                assert isinstance(good, Identity)
                v.record_use(good)
                svc.tokens.revoke(world.actor("dev@acme.test"), view.id)
                return [good, await v.verify(token), await v.verify("kbai_pk_nope")]
            finally:
                await v.stop()

        good, revoked, malformed = run(go())
        assert good == Identity(
            user_id=world.dev.user_id,
            email="dev@acme.test",
            tenant_id=world.tenant_id,  # type: ignore[arg-type]
            scopes=frozenset({"contacts.read"}),
            token_id=view.id,
        )
        assert isinstance(revoked, Failure) and revoked.error.message == errors.for_outcome("revoked").message
        assert isinstance(malformed, Failure) and malformed.code == "invalid_token"
        [listed] = svc.tokens.list(world.dev.user_id)  # type: ignore[arg-type]
        assert listed.last_used_at is not None  # flushed by stop()
    finally:
        svc.close()


def test_local_verifier_fails_closed_when_the_database_is_unusable(tmp_path) -> None:
    v = LocalVerifier(f"sqlite:///{tmp_path / 'never-migrated.db'}")

    async def go() -> Identity | Failure:
        try:
            return await v.verify(TOKEN)
        finally:
            await v.stop()

    result = run(go())
    assert isinstance(result, Failure) and (result.status, result.code) == (503, "auth_unavailable")


def test_local_verifier_takes_services_or_settings_not_both(tmp_path) -> None:
    with pytest.raises(ValueError):
        LocalVerifier(f"sqlite:///{tmp_path / 'x.db'}", services=object())  # type: ignore[arg-type]
