"""``Idempotency-Key`` on the API's creating POSTs: a retried create answers what the first one did.

Decorate a route (below ``@router.post``) with :func:`idempotent`. It declares the header in the
OpenAPI document, and when a request sends it: checks the key (1-255 printable ASCII), scopes it to
the caller and the route, fingerprints the request (path parameters and canonical JSON body), and
hands the rules to :mod:`kbai.store.idempotency`. A replay answers the first status and body with
``Idempotent-Replayed: true``, except that every secret field (the plaintext ``token``, a generated
``password``...) is ``null``: a secret is shown once and never stored, so a client that lost the first
answer learns what was created and rotates or revokes it instead of creating a duplicate.
Without the header a route behaves exactly as before.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
import logging
import re
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Header, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse
from pydantic import TypeAdapter

from kbai import errors
from kbai.errors import KbaiError
from kbai.store.idempotency import Claim, IdempotencyStore
from kbai.tokenformat import redact
from kbai.web.auth import Principal, services

log = logging.getLogger("kbai.web")
HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
_KEY_RE = re.compile(r"[\x20-\x7e]{1,255}")
# Fields that carry a secret, in a request or an answer. They are left out of the fingerprint (so no
# hash of a password is stored) and answered as null on a replay (so no secret is stored or shown twice).
SECRET_FIELDS = frozenset({"token", "password", "secret", "client_secret", "webhook_secret", "invitation_url"})

F = TypeVar("F", bound=Callable[..., Any])

DESCRIPTION = (
    "Optional. A unique key per create (a UUID is ideal), 1-255 printable ASCII characters. A retry with the "
    "same key and the same body within 24 h answers what the first request did (with `Idempotent-Replayed: "
    "true`) instead of creating again, except that a secret shown at creation (the plaintext `token`) is "
    "`null`: it is never shown twice. The same key with another body is a 422; while the first request is "
    "still running, a retry gets 409 `idempotency_in_progress`. Keys are kept per caller and operation."
)


async def _raw_body(request: Request) -> bytes:
    return await request.body()  # already read (and size-limited) by FastAPI for the body parameter


def principal_key(p: Principal) -> str:
    """Whose key it is: the person for a session (any of their sessions), the token for a token."""
    a = p.actor
    if p.via == "token":
        return f"token:{a.token_id}"
    if a.kind == "user":
        return f"user:{a.user_id}"
    return f"{a.kind}:{a.label}"[:120]


def fingerprint(path_params: dict[str, Any], body: bytes) -> str:
    """SHA-256 hex of the path parameters and the body, as canonical JSON (key order and spacing do not count)."""
    if body.strip():
        try:
            content: Any = _without_secrets(json.loads(body))
        except (ValueError, RecursionError):
            content = {"raw": hashlib.sha256(body).hexdigest()}
    else:
        content = None
    canonical = json.dumps(
        {"path": {k: str(v) for k, v in path_params.items()}, "body": content},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()


def _without_secrets(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_secrets(v) for k, v in value.items() if k not in SECRET_FIELDS}
    if isinstance(value, list):
        return [_without_secrets(v) for v in value]
    return value


def stored_form(value: Any) -> Any:
    """An answer as it may be stored: every secret field null, anything token-shaped redacted."""
    if isinstance(value, dict):
        return {k: None if k in SECRET_FIELDS else stored_form(v) for k, v in value.items()}
    if isinstance(value, list):
        return [stored_form(v) for v in value]
    if isinstance(value, str):
        return redact(value)
    return value


@functools.lru_cache(maxsize=64)
def _adapter(model: Any) -> TypeAdapter[Any]:
    return TypeAdapter(model)


def answer_json(route: Any, result: dict[str, Any]) -> Any:
    """``result`` as the route sends it: through its response model, as FastAPI serializes it."""
    model = getattr(route, "response_model", None)
    if model is None:
        return jsonable_encoder(result)
    adapter = _adapter(model)
    return adapter.dump_python(
        adapter.validate_python(result),
        mode="json",
        by_alias=True,
        exclude_none=bool(getattr(route, "response_model_exclude_none", False)),
    )


def _key(request: Request, declared: str | None) -> str | None:
    given = request.headers.getlist(HEADER)
    if not given:
        return None
    if len(given) > 1 or declared is None or not _KEY_RE.fullmatch(declared):
        raise KbaiError(errors.IDEMPOTENCY_KEY_INVALID)
    return declared


def _quietly(step: Callable[..., None], *args: Any) -> None:
    try:
        step(*args)
    except Exception as exc:  # noqa: BLE001 - logged; never turns a done create into an error
        log.warning("idempotency record not updated: %s", type(exc).__name__)


def idempotent(endpoint: F) -> F:
    """Make a creating route honour ``Idempotency-Key``. The route must take a :class:`Request` and a
    :class:`Principal` and return its JSON (a dict), as the API's routes do."""
    if inspect.iscoroutinefunction(endpoint):
        raise TypeError("idempotent() wraps sync routes: the key is checked and stored in the thread pool")
    signature = inspect.signature(endpoint, eval_str=True)
    extra = [
        inspect.Parameter(
            "idempotency_key_",
            inspect.Parameter.KEYWORD_ONLY,
            default=None,
            annotation=Annotated[
                str | None,
                Header(
                    alias=HEADER,
                    description=DESCRIPTION,
                    json_schema_extra={"minLength": 1, "maxLength": 255, "pattern": "^[\\x20-\\x7e]+$"},
                ),
            ],
        ),
        inspect.Parameter(
            "idempotency_body_", inspect.Parameter.KEYWORD_ONLY, annotation=Annotated[bytes, Depends(_raw_body)]
        ),
        inspect.Parameter("idempotency_response_", inspect.Parameter.KEYWORD_ONLY, annotation=Response),
    ]

    @functools.wraps(endpoint)
    def wrapper(
        *args: Any,
        idempotency_key_: str | None = None,
        idempotency_body_: bytes = b"",
        idempotency_response_: Response,
        **kwargs: Any,
    ) -> Any:
        request = next((v for v in kwargs.values() if isinstance(v, Request)), None)
        p = next((v for v in kwargs.values() if isinstance(v, Principal)), None)
        if request is None or p is None:
            raise TypeError(f"{endpoint.__name__} needs a Request and a Principal parameter to be idempotent")
        key = _key(request, idempotency_key_)
        if key is None:
            return endpoint(*args, **kwargs)
        route = request.scope.get("route")
        route_name = f"{request.method} {getattr(route, 'path', request.url.path)}"
        svc = services(request)
        store = IdempotencyStore(svc.db, svc.clock)
        outcome = store.begin(principal_key(p), route_name, key, fingerprint(request.path_params, idempotency_body_))
        if not isinstance(outcome, Claim):
            # Sent as stored, not through today's response model: a replay is the first answer, even if an
            # upgrade changed the model since.
            return JSONResponse(outcome.body, status_code=outcome.status, headers={REPLAYED_HEADER: "true"})
        try:
            result = endpoint(*args, **kwargs)
        except BaseException:
            _quietly(store.release, outcome)  # nothing was created: the key may be used again
            raise
        try:
            if not isinstance(result, dict):
                raise TypeError("the route returned no JSON object")
            stored = stored_form(answer_json(route, result))
        except Exception as exc:  # noqa: BLE001 - FastAPI reports a bad answer itself; nothing to keep
            log.warning("%s: answer not kept for its Idempotency-Key: %s", route_name, type(exc).__name__)
            _quietly(store.release, outcome)
            return result
        status = idempotency_response_.status_code or getattr(route, "status_code", None) or 200
        # The create is committed: its answer (the one chance to see the token) goes out even if storing
        # it fails; the claim then lapses after its lease, and a retry meets the create's own 409.
        _quietly(store.finish, outcome, status, stored)
        return result

    wrapper.__signature__ = signature.replace(  # type: ignore[attr-defined]  # FastAPI reads the extended signature
        parameters=[*signature.parameters.values(), *extra]
    )
    return wrapper  # type: ignore[return-value]  # the route's own signature plus the header parameters
