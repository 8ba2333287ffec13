"""Helpers for tests that throw bad or hostile requests: database snapshots and error-envelope checks.

A snapshot is every row of every kbai table, so "nothing changed" means exactly that. Messages are
checked for the things a crash leaks (tracebacks, Python reprs, SQL); no helper ever prints a token.
"""

from __future__ import annotations

import html
import re
from typing import Any

import httpx
from sqlalchemy import inspect, select

from kbai.store import Database
from kbai.store.models import Base
from kbai.tokenformat import redact

# What an error message must never contain: signs of an unhandled exception or of internals.
LEAKS = (
    "Traceback",
    "<class",
    'File "',
    " object at 0x",
    "errors.pydantic.dev",
    "sqlalchemy",
    "psycopg",
    "sqlite3",
    "SELECT ",
    "INSERT ",
    "UPDATE ",
    "Exception",
    "NoneType",
    "KeyError",
    "ValueError",
)

Snapshot = dict[str, list[tuple[Any, ...]]]


def snapshot(db: Database) -> Snapshot:
    """Every row of every table the models know (and the database has), in primary-key order."""
    with db.engine.connect() as conn:
        present = set(inspect(conn).get_table_names())
        out: Snapshot = {}
        for table in Base.metadata.sorted_tables:
            if table.name in present:
                rows = conn.execute(select(table).order_by(*table.primary_key.columns)).all()
                out[table.name] = [tuple(r) for r in rows]
        conn.rollback()
    return out


def changed_tables(before: Snapshot, after: Snapshot) -> list[str]:
    """Names of the tables whose rows differ (the rows themselves are not shown: they hold digests)."""
    return sorted(name for name in set(before) | set(after) if before.get(name) != after.get(name))


def shown(response: httpx.Response) -> str:
    """The response for an assertion message: status and a redacted, shortened body."""
    return f"{response.status_code} {redact(response.text)[:300]!r}"


def shown_page(response: httpx.Response) -> str:
    """An HTML response for an assertion message: status, page title and alert text, redacted."""
    title = re.search(r"<title>([^<]*)</title>", response.text)
    alert = re.search(r'role="alert">([^<]*)<', response.text)
    parts = [str(response.status_code), title.group(1) if title else "", alert.group(1) if alert else "(no alert)"]
    if not response.headers.get("content-type", "").startswith("text/html"):
        parts.append(response.text[:200])
    return redact(" | ".join(parts))


def error_problems(response: httpx.Response, status: int, code: str, says: str = "") -> list[str]:
    """What is wrong with ``response`` as the error ``status``/``code`` (empty when it is right)."""
    problems: list[str] = []
    if response.status_code != status:
        problems.append(f"status {response.status_code}, expected {status}")
    try:
        body = response.json()
    except ValueError:
        return [*problems, "body is not JSON"]
    if not (
        isinstance(body, dict)
        and set(body) == {"error"}
        and isinstance(body["error"], dict)
        and set(body["error"]) == {"code", "message"}
    ):
        return [*problems, 'body is not {"error": {"code", "message"}}']
    if body["error"]["code"] != code:
        problems.append(f"code {body['error']['code']!r}, expected {code!r}")
    message = body["error"]["message"]
    if not isinstance(message, str) or not message.strip():
        problems.append("empty message")
    else:
        problems += [f"message contains {leak!r}" for leak in LEAKS if leak in message]
        if says and says not in message:
            problems.append(f"message does not say {says!r}")
    if status == 401 and code in ("invalid_token", "not_authenticated") and "www-authenticate" not in response.headers:
        problems.append("401 without WWW-Authenticate")
    return problems


def scim_problems(response: httpx.Response, status: int, scim_type: str, says: str = "") -> list[str]:
    """What is wrong with ``response`` as the RFC 7644 SCIM error ``status`` / ``scimType`` ("" for none)."""
    problems: list[str] = []
    if response.status_code != status:
        problems.append(f"status {response.status_code}, expected {status}")
    if not response.headers.get("content-type", "").startswith("application/scim+json"):
        problems.append("not application/scim+json")
    try:
        body = response.json()
    except ValueError:
        return [*problems, "body is not JSON"]
    if not (
        isinstance(body, dict)
        and body.get("schemas") == ["urn:ietf:params:scim:api:messages:2.0:Error"]
        and body.get("status") == str(response.status_code)
    ):
        return [*problems, "body is not a SCIM Error"]
    if body.get("scimType", "") != scim_type:
        problems.append(f"scimType {body.get('scimType')!r}, expected {scim_type!r}")
    detail = body.get("detail")
    if not isinstance(detail, str) or not detail.strip():
        problems.append("empty detail")
    else:
        problems += [f"detail contains {leak!r}" for leak in LEAKS if leak in detail]
        if says and says not in detail:
            problems.append(f"detail does not say {says!r}")
    if status == 401 and "www-authenticate" not in response.headers:
        problems.append("401 without WWW-Authenticate")
    return problems


_ALERT = re.compile(r'<[a-z]+ [^>]*data-code="([^"]*)" role="alert">([^<]*)<')


def page_problems(response: httpx.Response, status: int, code: str, says: str = "") -> list[str]:
    """What is wrong with ``response`` as the HTML error page ``status``/``code`` (empty when it is right):
    an HTML page (never JSON, never a traceback) whose alert carries the error code and a clear message."""
    problems: list[str] = []
    if response.status_code != status:
        problems.append(f"status {response.status_code}, expected {status}")
    if not response.headers.get("content-type", "").startswith("text/html"):
        return [*problems, f"not an HTML page ({response.headers.get('content-type')})"]
    found = _ALERT.findall(response.text)
    if len(found) != 1:
        return [*problems, f"{len(found)} error alerts on the page, expected 1"]
    ((shown_code, message),) = found
    message = html.unescape(message).strip()
    if shown_code != code:
        problems.append(f"code {shown_code!r}, expected {code!r}")
    if not message:
        problems.append("empty message")
    problems += [f"message contains {leak!r}" for leak in LEAKS if leak in message]
    if says and says not in message:
        problems.append(f"message {redact(message)[:200]!r} does not say {says!r}")
    if "Traceback" in response.text:
        problems.append("the page holds a traceback")
    if "<script>alert" in response.text:
        problems.append("the page holds unescaped markup from the request")
    return problems
