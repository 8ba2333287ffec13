"""What nginx's own limits do in front of kbai with the shipped deploy/nginx/kbai.conf (which keeps nginx's
defaults: request header lines up to 8 KiB, 1 MiB bodies). docs/security.md tells operators to keep them:
an oversized header or body is refused by nginx itself, never reaches the app, and never costs kbai a
check; everything under the limits still gets kbai's answer.
"""

from __future__ import annotations

import httpx

from tests.gateway.test_nginx import Stack, stack  # noqa: F401 - the module's nginx + kbai + echo fixture


def _not_upstream(r: httpx.Response) -> bool:
    try:
        return r.json().get("upstream") != "echo"
    except ValueError:
        return True


def test_header_lines_over_8_kib_are_refused_by_nginx(stack: Stack) -> None:
    for headers in (
        {"Authorization": "Bearer " + "a" * 9_000},
        {"Authorization": "Bearer kbai_pk_" + "0" * 65_536},
        {"Cookie": "c=" + "x" * 9_000},
    ):
        r = httpx.get(stack.nginx_url + "/", headers=headers, timeout=30)
        assert r.status_code == 400 and _not_upstream(r), (r.status_code, r.text[:200])


def test_under_the_limit_kbai_answers(stack: Stack) -> None:
    r = httpx.get(stack.nginx_url + "/", headers={"Authorization": "Bearer " + "a" * 7_000}, timeout=30)
    assert r.status_code == 401 and _not_upstream(r)
    assert 'error="invalid_token"' in r.headers["www-authenticate"]


def test_bodies_over_1_mib_are_refused_by_nginx(stack: Stack) -> None:
    r = httpx.post(
        stack.nginx_url + "/",
        content=b"x" * (1024 * 1024 + 1),
        headers={"Authorization": "Bearer kbai_pk_" + "0" * 64},
        timeout=30,
    )
    assert r.status_code == 413 and _not_upstream(r)
