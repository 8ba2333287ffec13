"""Small helpers shared by the core tests. None of them ever prints a plaintext token."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import func, or_, select

from kbai.errors import KbaiError
from kbai.services import Services
from kbai.store.audit import Actor
from kbai.store.models import Token
from kbai.tokens.service import TokenView


@contextmanager
def raises_code(code: str) -> Iterator[pytest.ExceptionInfo[KbaiError]]:
    """Expect a KbaiError with ``code`` (messages never hold tokens, so showing them is safe)."""
    __tracebackhide__ = True
    with pytest.raises(KbaiError) as info:
        yield info
    assert info.value.code == code, f"expected {code}, got {info.value.code}: {info.value.message}"


def assert_no_secret(secret: str, text: str, what: str = "text") -> None:
    """Fail without echoing ``secret`` when it appears in ``text``."""
    __tracebackhide__ = True  # pytest would print this frame's arguments, the secret among them
    found = secret in text
    assert not found, f"a plaintext token (or its secret part) appears in the {what}"


def active_in_db(svc: Services, user_id: int) -> int:
    """Active tokens of a user, counted straight from the table at the services' clock time."""
    now = svc.clock.now()
    with svc.db.read() as s:
        return int(
            s.scalar(
                select(func.count(Token.id)).where(
                    Token.user_id == user_id,
                    or_(Token.revoked_at.is_(None), Token.revoked_at > now),
                    or_(Token.expires_at.is_(None), Token.expires_at > now),
                )
            )
            or 0
        )


def token_actor(owner: Actor, view: TokenView, scopes: frozenset[str] | None = None) -> Actor:
    """The Actor of a request authenticated with the token ``view`` of ``owner``."""
    return Actor(
        kind="token",
        user_id=owner.user_id,
        tenant_id=owner.tenant_id,
        email=owner.email,
        token_id=view.id,
        token_prefix=view.prefix,
        permissions=frozenset(view.scopes) if scopes is None else scopes,
    )


def make_tokens(svc: Services, actor: Actor, count: int, prefix: str = "tok", **kwargs: object) -> list[TokenView]:
    """``count`` tokens named prefix-0.. (the plaintexts are dropped at once)."""
    return [svc.tokens.create(actor, f"{prefix}-{i}", [], **kwargs)[0] for i in range(count)]
