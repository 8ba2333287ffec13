"""How a :class:`~kbai.errors.KbaiError` is answered over HTTP (the JSON envelope and RFC 6750
headers) and how a Bearer token is read from a request.

Deliberately light: only Starlette and ``kbai.errors``, no database, settings or pages, because
``kbai.sdk`` uses it inside other services that install kbai without the server's dependencies.
"""

from __future__ import annotations

from starlette.requests import HTTPConnection
from starlette.responses import JSONResponse

from kbai import errors
from kbai.errors import KbaiError

REALM = 'Bearer realm="kbai"'


def bearer_token(connection: HTTPConnection) -> str | None:
    """The token from ``Authorization: Bearer ...``; None when there is no Authorization header."""
    return parse_bearer(connection.headers.get("authorization"))


def parse_bearer(header: str | None) -> str | None:
    """The token of an ``Authorization`` header's value; None when there is no such header."""
    if header is None:
        return None
    scheme, _, rest = header.partition(" ")
    if scheme.lower() != "bearer":
        raise KbaiError(errors.INVALID_TOKEN, description="Use the Bearer scheme: Authorization: Bearer kbai_pk_...")
    return rest.lstrip(" ")


def _quoted(text: str) -> str:
    """RFC 6750 error_description allows printable ASCII except '"' and '\\'."""
    return "".join(ch if 0x20 <= ord(ch) <= 0x7E and ch not in '"\\' else "'" if ch == '"' else " " for ch in text)


def auth_headers(err: KbaiError) -> dict[str, str]:
    if err.code == "invalid_token":
        headers = {"WWW-Authenticate": f'{REALM}, error="invalid_token", error_description="{_quoted(err.message)}"'}
        if "retry_after" in err.params:  # a rate limit reported as 401 (forward-auth only understands 401/403)
            headers["Retry-After"] = str(err.params["retry_after"])
        return headers
    if err.code == "insufficient_scope":
        missing = str(err.params.get("scope", ""))
        return {
            "WWW-Authenticate": f'{REALM}, error="insufficient_scope", '
            f'error_description="{_quoted(err.message)}", scope="{_quoted(missing)}"'
        }
    if err.code == "not_authenticated":
        return {"WWW-Authenticate": REALM}
    if err.code == "invalid_client":
        return {"WWW-Authenticate": 'Basic realm="kbai"'}
    if err.code == "rate_limited":
        return {"Retry-After": str(err.params.get("retry_after", 60))}
    if err.code == "quota_exhausted":
        return {"Retry-After": str(err.params["retry_after"])} if "retry_after" in err.params else {}
    if err.code == "idempotency_in_progress":
        return {"Retry-After": "1"}
    return {}


def error_response(err: KbaiError) -> JSONResponse:
    return JSONResponse(
        {"error": {"code": err.code, "message": err.message}}, status_code=err.status, headers=auth_headers(err)
    )


def security_headers(img_origin: str | None = None) -> list[tuple[bytes, bytes]]:
    """The headers of every answer. The CSP stays strict; a brand logo's origin joins img-src only."""
    img = b"'self' data:" + (b" " + img_origin.encode("ascii") if img_origin else b"")
    return [
        (b"x-content-type-options", b"nosniff"),
        (b"referrer-policy", b"no-referrer"),
        (b"x-frame-options", b"DENY"),
        (
            b"content-security-policy",
            b"default-src 'self'; img-src " + img + b"; style-src 'self'; script-src 'self'; "
            b"frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
        ),
        (b"cross-origin-opener-policy", b"same-origin"),
    ]


SECURITY_HEADERS = security_headers()
