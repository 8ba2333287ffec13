"""The SCIM 2.0 service provider at ``/scim/v2`` (thin: every rule is in :mod:`kbai.identity.scim`).

Authenticated with a tenant's provisioning credential (``Authorization: Bearer kbai_scim_...``); the tenant
is the credential's, so nothing of another tenant is ever found. Every answer, errors included, is
``application/scim+json``; errors follow RFC 7644 §3.12 (``schemas``, ``status``, ``scimType``, ``detail``).
Not in ``/openapi.json``: a SCIM client discovers this service from its own ``ServiceProviderConfig``,
``ResourceTypes`` and ``Schemas`` endpoints.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.routing import APIRoute
from scim2_models import (
    InvalidSyntaxException,
    InvalidValueException,
    NotFoundException,
    PayloadTooLargeException,
    SCIMException,
    UnauthorizedException,
)
from sqlalchemy.exc import DataError, OperationalError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from kbai.access.provisioning import ProvisioningView
from kbai.errors import KbaiError
from kbai.identity.scim import MAX_RESULTS, Page, Scim, kbai_error, search_all
from kbai.store.audit import Actor
from kbai.tokenformat import redact
from kbai.web.auth import client_ip, services

log = logging.getLogger("kbai.scim")
MEDIA_TYPE = "application/scim+json"
_ERROR_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:Error"
_LIST_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:ListResponse"


def scim_error_body(status: int, detail: str, scim_type: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"schemas": [_ERROR_SCHEMA], "status": str(status), "detail": redact(detail)[:500]}
    if scim_type:
        body["scimType"] = scim_type
    return body


def scim_error(exc: SCIMException) -> Response:
    headers = {}
    if exc.status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="kbai-scim"'
    return Response(
        json.dumps(scim_error_body(exc.status, str(exc), exc.scim_type or None)),
        status_code=exc.status,
        media_type=MEDIA_TYPE,
        headers=headers,
    )


class ScimRoute(APIRoute):
    """Every failure of a SCIM route, whatever raised it, answers in the SCIM error schema: never a 500 page
    in another format, and never kbai's own ``{"error": ...}`` envelope."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except SCIMException as exc:
                return scim_error(exc)
            except KbaiError as exc:
                return scim_error(kbai_error(exc))
            except HTTPException as exc:
                if exc.status_code == 413:
                    return scim_error(PayloadTooLargeException(detail=str(exc.detail)))
                error = SCIMException(detail=str(exc.detail))
                error.status = exc.status_code
                return scim_error(error)
            except DataError:
                return scim_error(InvalidValueException(detail="A value in the request is out of range or malformed."))
            except OperationalError:
                error = SCIMException(detail="The database cannot be reached right now; retry in a few seconds.")
                error.status = 503
                return scim_error(error)
            except Exception as exc:  # noqa: BLE001 - a bug: logged, answered in SCIM's schema
                log.error(
                    "unhandled %s on %s %s: %s",
                    type(exc).__name__,
                    request.method,
                    request.url.path,
                    redact(str(exc))[:500],
                )
                error = SCIMException(detail="Something went wrong on our side; it has been logged.")
                error.status = 500
                return scim_error(error)

        return route


router = APIRouter(prefix="/scim/v2", route_class=ScimRoute, include_in_schema=False)


def answer(body: Any, status: int = 200, *, location: str | None = None) -> Response:
    headers = {"Cache-Control": "no-store"}
    if isinstance(body, dict) and isinstance(body.get("meta"), dict) and body["meta"].get("version"):
        headers["ETag"] = body["meta"]["version"]
    if location:
        headers["Location"] = location
    return Response(json.dumps(body, default=str), status_code=status, media_type=MEDIA_TYPE, headers=headers)


def base_url(request: Request) -> str:
    return str(request.base_url).rstrip("/") + "/scim/v2"


def _credential(request: Request) -> ProvisioningView:
    header = request.headers.get("authorization", "")
    scheme, _, secret = header.partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        raise UnauthorizedException(
            detail="Send a provisioning credential: Authorization: Bearer kbai_scim_... "
            "(System Settings > Provisioning (SCIM))."
        )
    found = services(request).provisioning.authenticate(secret.strip())
    if found is None:
        raise UnauthorizedException(
            detail="Unknown or revoked provisioning credential. Create a new one in System "
            "Settings > Provisioning (SCIM) and paste it into your identity provider."
        )
    return found


async def _actor(request: Request) -> Actor:
    view = await run_in_threadpool(_credential, request)
    return view.actor(client_ip(request))


async def _body(request: Request) -> Any:
    raw = await request.body()
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise InvalidSyntaxException(detail="The body must be a JSON object (application/scim+json).") from None


def _paging(request: Request) -> tuple[int, int]:
    def number(name: str, default: int) -> int:
        raw = request.query_params.get(name)
        if raw is None or raw == "":
            return default
        try:
            return int(raw)
        except ValueError:
            raise InvalidValueException(detail=f"{name} must be an integer.") from None

    start = number("startIndex", 1)
    count = number("count", MAX_RESULTS)
    # RFC 7644 §3.4.2.4: startIndex below 1 is read as 1, a negative count as 0, a count above the maximum as it.
    return max(start, 1), min(max(count, 0), MAX_RESULTS)


def _list(page: Page, selection: tuple[list[str], list[str]] = ([], [])) -> Response:
    items = [select_attributes(r, *selection) for r in page.resources]
    return answer(
        {
            "schemas": [_LIST_SCHEMA],
            "totalResults": page.total,
            "startIndex": page.start,
            "itemsPerPage": len(items),
            "Resources": items,
        }
    )


_CORE_PREFIXES = ("urn:ietf:params:scim:schemas:core:2.0:user:", "urn:ietf:params:scim:schemas:core:2.0:group:")
_ALWAYS = {"id", "schemas"}


def _paths(value: Any) -> list[str]:
    if value is None:
        return []
    items = value if isinstance(value, list) else str(value).split(",")
    out = []
    for item in items[:100]:
        text = str(item).strip()
        low = text.casefold()
        for prefix in _CORE_PREFIXES:
            if low.startswith(prefix):
                text = text[len(prefix) :]
        if text:
            out.append(text)
    return out


def _key(body: dict[str, Any], name: str) -> str | None:
    return next((k for k in body if k.casefold() == name.casefold()), None)


def _split(path: str) -> tuple[str, str]:
    if path.casefold().startswith("urn:"):  # an extension's attribute: urn:...:User:manager.value
        urn, _, rest = path.rpartition(":")
        return urn, rest
    top, _, sub = path.partition(".")
    return top, sub


def select_attributes(body: dict[str, Any], attributes: list[str], excluded: list[str]) -> dict[str, Any]:
    """RFC 7644 §3.4.2.5 ``attributes`` / ``excludedAttributes`` on one resource (``id`` and ``schemas`` stay)."""
    if attributes:
        out = {k: v for k, v in body.items() if k in _ALWAYS}
        for path in attributes:
            top, sub = _split(path)
            key = _key(body, top)
            if key is None:
                continue
            value = body[key]
            if sub and isinstance(value, dict):
                inner = _key(value, sub.split(".")[0]) if not top.casefold().startswith("urn:") else _key(value, sub)
                if inner is not None:
                    out.setdefault(key, {})[inner] = value[inner]
            elif sub and isinstance(value, list):
                out[key] = [
                    {k: v for k, v in item.items() if k.casefold() == sub.casefold()}
                    for item in value
                    if isinstance(item, dict)
                ]
            else:
                out[key] = value
        return out
    if excluded:
        out = dict(body)
        for path in excluded:
            top, sub = _split(path)
            key = _key(out, top)
            if key is None or key in _ALWAYS:
                continue
            if not sub:
                del out[key]
            elif isinstance(out[key], dict):
                out[key] = {k: v for k, v in out[key].items() if k.casefold() != sub.casefold()}
            elif isinstance(out[key], list):
                out[key] = [
                    {k: v for k, v in item.items() if k.casefold() != sub.casefold()}
                    for item in out[key]
                    if isinstance(item, dict)
                ]
        return out
    return body


def _selection(request: Request) -> tuple[list[str], list[str]]:
    return _paths(request.query_params.get("attributes")), _paths(request.query_params.get("excludedAttributes"))


def _svc(request: Request) -> Scim:
    return services(request).scim


# ---- discovery ---------------------------------------------------------------------------------
def _all_of(items: list[dict[str, Any]]) -> Response:
    """A discovery list: every item on one page."""
    return answer(
        {
            "schemas": [_LIST_SCHEMA],
            "totalResults": len(items),
            "startIndex": 1,
            "itemsPerPage": len(items),
            "Resources": items,
        }
    )


@router.get("/ServiceProviderConfig")
async def scim_service_provider_config(request: Request) -> Response:
    await _actor(request)
    return answer(Scim.service_provider_config(base_url(request)))


@router.get("/ResourceTypes")
async def scim_resource_types(request: Request) -> Response:
    await _actor(request)
    items = Scim.resource_types(base_url(request))
    return _all_of(items)


@router.get("/ResourceTypes/{name}")
async def scim_resource_type(name: str, request: Request) -> Response:
    await _actor(request)
    for item in Scim.resource_types(base_url(request)):
        if item["id"] == name or item["name"] == name:
            return answer(item)
    raise NotFoundException(detail=f"No resource type {name[:40]!r}: this service has User and Group.")


@router.get("/Schemas")
async def scim_schemas(request: Request) -> Response:
    await _actor(request)
    items = Scim.schemas(base_url(request))
    return _all_of(items)


@router.get("/Schemas/{schema_id}")
async def scim_schema(schema_id: str, request: Request) -> Response:
    await _actor(request)
    for item in Scim.schemas(base_url(request)):
        if item["id"] == schema_id:
            return answer(item)
    raise NotFoundException(detail=f"No schema {schema_id[:80]!r} here.")


# ---- users and groups --------------------------------------------------------------------------
def _resource_routes(kind: str) -> None:
    """GET (list, one), POST, PUT, PATCH and DELETE for ``Users`` or ``Groups``."""
    single = kind[:-1].lower()

    async def list_resources(request: Request) -> Response:
        actor = await _actor(request)
        start, count = _paging(request)
        method = getattr(_svc(request), f"list_{single}s")
        page = await run_in_threadpool(
            method, actor, base_url(request), request.query_params.get("filter"), start, count
        )
        return _list(page, _selection(request))

    async def search_resources(request: Request) -> Response:
        actor = await _actor(request)
        body = await _body(request)
        if not isinstance(body, dict):
            raise InvalidSyntaxException(detail="The body must be a SearchRequest object.")
        start, count = body.get("startIndex", 1), body.get("count", MAX_RESULTS)
        if not isinstance(start, int) or not isinstance(count, int) or isinstance(start, bool):
            raise InvalidValueException(detail="startIndex and count must be integers.")
        flt = body.get("filter")
        if flt is not None and not isinstance(flt, str):
            raise InvalidValueException(detail="filter must be a string.")
        method = getattr(_svc(request), f"list_{single}s")
        page = await run_in_threadpool(
            method, actor, base_url(request), flt, max(start, 1), min(max(count, 0), MAX_RESULTS)
        )
        return _list(page, (_paths(body.get("attributes")), _paths(body.get("excludedAttributes"))))

    async def get_resource(resource_id: str, request: Request) -> Response:
        actor = await _actor(request)
        body = await run_in_threadpool(getattr(_svc(request), f"get_{single}"), actor, base_url(request), resource_id)
        return answer(select_attributes(body, *_selection(request)))

    async def create_resource(request: Request) -> Response:
        actor = await _actor(request)
        payload = await _body(request)
        body = await run_in_threadpool(getattr(_svc(request), f"create_{single}"), actor, base_url(request), payload)
        return answer(body, 201, location=body["meta"]["location"])

    async def replace_resource(resource_id: str, request: Request) -> Response:
        actor = await _actor(request)
        payload = await _body(request)
        body = await run_in_threadpool(
            getattr(_svc(request), f"replace_{single}"),
            actor,
            base_url(request),
            resource_id,
            payload,
            request.headers.get("if-match"),
        )
        return answer(body)

    async def patch_resource(resource_id: str, request: Request) -> Response:
        actor = await _actor(request)
        payload = await _body(request)
        body = await run_in_threadpool(
            getattr(_svc(request), f"patch_{single}"),
            actor,
            base_url(request),
            resource_id,
            payload,
            request.headers.get("if-match"),
        )
        return answer(body)

    async def delete_resource(resource_id: str, request: Request) -> Response:
        actor = await _actor(request)
        svc = _svc(request)
        if single == "user":
            await run_in_threadpool(
                svc.delete_user, actor, resource_id, request.headers.get("if-match"), base_url(request)
            )
        else:
            await run_in_threadpool(
                svc.delete_group, actor, base_url(request), resource_id, request.headers.get("if-match")
            )
        return Response(status_code=204)

    router.add_api_route(f"/{kind}", list_resources, methods=["GET"], name=f"scim_list_{single}s")
    router.add_api_route(f"/{kind}/.search", search_resources, methods=["POST"], name=f"scim_search_{single}s")
    router.add_api_route(f"/{kind}", create_resource, methods=["POST"], name=f"scim_create_{single}")
    router.add_api_route(f"/{kind}/{{resource_id}}", get_resource, methods=["GET"], name=f"scim_get_{single}")
    router.add_api_route(f"/{kind}/{{resource_id}}", replace_resource, methods=["PUT"], name=f"scim_replace_{single}")
    router.add_api_route(f"/{kind}/{{resource_id}}", patch_resource, methods=["PATCH"], name=f"scim_patch_{single}")
    router.add_api_route(f"/{kind}/{{resource_id}}", delete_resource, methods=["DELETE"], name=f"scim_delete_{single}")


_resource_routes("Users")
_resource_routes("Groups")


@router.post("/.search")
async def scim_search(request: Request) -> Response:
    """A SearchRequest over every resource type (Users, then Groups)."""
    actor = await _actor(request)
    body = await _body(request)
    if not isinstance(body, dict):
        raise InvalidSyntaxException(detail="The body must be a SearchRequest object.")
    start, count = body.get("startIndex", 1), body.get("count", MAX_RESULTS)
    if not isinstance(start, int) or not isinstance(count, int) or isinstance(start, bool) or isinstance(count, bool):
        raise InvalidValueException(detail="startIndex and count must be integers.")
    flt = body.get("filter")
    if flt is not None and not isinstance(flt, str):
        raise InvalidValueException(detail="filter must be a string.")
    page = await run_in_threadpool(
        search_all, _svc(request), actor, base_url(request), flt, max(start, 1), min(max(count, 0), MAX_RESULTS)
    )
    return _list(page, (_paths(body.get("attributes")), _paths(body.get("excludedAttributes"))))


@router.api_route("/ServiceProviderConfig", methods=["POST", "PUT", "PATCH", "DELETE"])
@router.api_route("/ResourceTypes", methods=["POST", "PUT", "PATCH", "DELETE"])
@router.api_route("/ResourceTypes/{rest:path}", methods=["POST", "PUT", "PATCH", "DELETE"])
@router.api_route("/Schemas", methods=["POST", "PUT", "PATCH", "DELETE"])
@router.api_route("/Schemas/{rest:path}", methods=["POST", "PUT", "PATCH", "DELETE"])
async def scim_read_only(request: Request, rest: str = "") -> Response:
    """The discovery endpoints are read-only (RFC 7644 §4)."""
    await _actor(request)
    error = SCIMException(detail=f"{request.method} is not allowed here: the discovery endpoints are read-only.")
    error.status = 405
    return scim_error(error)


@router.api_route("/{rest:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
async def scim_unknown(rest: str, request: Request) -> Response:
    """Anything else under /scim/v2: a SCIM 404 (after authentication, so nothing is told to strangers)."""
    await _actor(request)
    raise NotFoundException(
        detail=f"No SCIM endpoint /{rest[:80]}: this service has /Users, /Groups, "
        "/ServiceProviderConfig, /ResourceTypes and /Schemas."
    )
