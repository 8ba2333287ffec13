"""A real `kbai serve` process answers /healthz and applies migrations on start, on both backends."""

from tests.conftest import LiveServer


def test_serve_is_healthy(live_server: LiveServer) -> None:
    with live_server.client() as c:
        r = c.get("/healthz")
    assert r.status_code == 200
    assert r.json()["database"] == "ok"
