"""Issue 6: schemathesis *stateful* runs. Sequences of calls follow the OpenAPI links of /openapi.json
(create a token -> read, revoke, rotate it, read its activity; create a role -> read, change it; create a
user -> set their roles, deactivate them) against a live `kbai serve` on SQLite, with a session
(cookie + X-CSRF-Token). Every response must be a non-5xx that matches the schema, and a resource
just created must be reachable through its links (schemathesis' ensure_resource_availability).

How (schemathesis 4.32, Hypothesis, pytest 9): ``schema.as_state_machine()`` turns the links into a
Hypothesis RuleBasedStateMachine; the test subclasses it (session headers and cookie, steering calls on
the caller's own user id to a stand-in, realistic names and scopes in the bodies that start a chain, a
tally of what ran) and runs it with ``schemathesis.generation.stateful.run_state_machine_as_test`` inside
an ordinary test function. Not used: the pytest plugin (``schemathesis.pytest.from_fixture`` breaks on
pytest 9, see tests/web/test_schemathesis.py) and the ``Workflow.TestCase`` unittest class (it could not
take the live-server fixture). Link inference is off, so only the links kbai publishes are followed;
requests are generated in positive mode (the stateless run and the hostile-input table cover refusals).
Check failures are collected and reported at the end rather than raised mid-run (see validate_response).
"""

from __future__ import annotations

import shutil
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, settings
from hypothesis.errors import Flaky
from schemathesis.checks import not_a_server_error
from schemathesis.engine.errors import is_inconsistent_replay
from schemathesis.generation.stateful import run_state_machine_as_test
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ensure_resource_availability,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
    use_after_free,
)

from kbai.access.catalog import Catalog
from kbai.access.service import MAX_LIMIT
from kbai.app import LINKS, create_app
from kbai.config import Settings
from kbai.services import Services
from kbai.tokenformat import redact
from tests.conftest import FAST_ARGON2, OPERATOR, LiveServer, build_world, start_server
from tests.gateway.helpers import ADMIN_EMAIL, ADMIN_PASSWORD, login

SCENARIOS = 100  # Hypothesis examples: each one a sequence of calls
MAX_STEPS = 8  # calls per sequence at most
MAX_RUNS = 10  # Hypothesis runs to get there (see the loop in the test)
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    ensure_resource_availability,
    use_after_free,
]


def served_schema() -> dict[str, Any]:
    """The document `kbai serve` publishes (test_live_server_serves_the_linked_schema proves it)."""
    svc = Services.build(Settings(database_url="sqlite://", redis_url=None, permissions_file=None))
    try:
        return create_app(svc, start_background=False).openapi()
    finally:
        svc.close()


DOCUMENT = served_schema()
CONFIG = schemathesis.Config.from_dict(
    {
        "generation": {"mode": "positive", "with-security-parameters": False, "database": "none"},
        "phases": {"stateful": {"enabled": True, "max-steps": MAX_STEPS, "inference": {"algorithms": []}}},
    }
)
schema = schemathesis.openapi.from_dict(DOCUMENT, config=CONFIG)


@dataclass
class Live:
    server: LiveServer
    admin_id: int
    stand_in_user_id: int
    cookie: str = field(repr=False)
    csrf: str = field(repr=False)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path) -> Iterator[Live]:
    tmp = tmp_path_factory.mktemp("stateful")
    shutil.copy(sqlite_template, tmp / "kbai.db")
    database_url = f"sqlite:///{tmp / 'kbai.db'}"
    svc = Services.build(Settings(database_url=database_url, **FAST_ARGON2))
    try:
        world = build_world(svc)
        stand_in, _ = svc.access.create_user(OPERATOR, world.tenant_id, "stand-in@acme.test", "stand-in-pass-1")
        # Sequences create many tokens; the active-token limit has its own tests.
        svc.access.set_limit(OPERATOR, MAX_LIMIT, user_email=ADMIN_EMAIL)
        assert world.admin.user_id is not None
        admin_id = world.admin.user_id
    finally:
        svc.close()
    server = start_server(
        database_url,
        tmp,
        KBAI_AUTH_FAILURES_PER_MINUTE="100000",
        KBAI_LOGIN_FAILURES_PER_MINUTE="100000",
        KBAI_INTROSPECTION_FAILURES_PER_MINUTE="100000",
    )
    try:
        with server.client() as c:
            csrf = login(c, ADMIN_EMAIL, ADMIN_PASSWORD)
            cookie = c.cookies["kbai_session"]
        yield Live(server, admin_id, stand_in.id, cookie, csrf)
    finally:
        server.stop()


def test_live_server_serves_the_linked_schema(live: Live) -> None:
    with live.server.client() as c:
        served = c.get("/openapi.json").json()
    assert served == DOCUMENT
    linked = {
        (m, p, s): set(r["links"])
        for p, ops in served["paths"].items()
        for m, op in ops.items()
        for s, r in op["responses"].items()
        if r.get("links")
    }
    assert linked == {source: set(links) for source, links in LINKS.items()}


def test_links_point_at_operations_that_take_the_id() -> None:
    ops = {op["operationId"]: op for ops in DOCUMENT["paths"].values() for op in ops.values()}
    for (method, path, status), names in LINKS.items():
        response = DOCUMENT["paths"][path][method]["responses"][status]
        id_schema = DOCUMENT["components"]["schemas"][
            response["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
        ]["properties"]["id"]
        assert id_schema["type"] == "integer", (method, path)
        for name in names:
            link = response["links"][name]
            ((param, expression),) = link["parameters"].items()
            target = ops[link["operationId"]]
            assert expression == "$response.body#/id"
            assert [p["name"] for p in target["parameters"] if p["in"] == "path"] == [param]


PERMISSIONS = {p.key for p in Catalog.load(None).permissions}
ROLE_NAMES = {"Member", "Developers"}
_serial = iter(range(1, 1_000_000))


def realistic(case: schemathesis.Case) -> None:
    """Make the bodies that start a chain acceptable, so chains go on: a fresh name or email, and only
    scopes, permissions and roles that exist (held by the admin). Every other field stays as generated.
    (Random names and scopes are almost always refused; the stateless run and the hostile-input table
    already cover those refusals.)"""
    body = case.body
    if case.method.upper() not in ("POST", "PUT") or not isinstance(body, dict):
        return
    n = next(_serial)
    if case.operation.path in ("/api/v1/tokens", "/api/v1/roles") and case.method.upper() == "POST":
        body["name"] = f"stateful {n}"
    if case.operation.path == "/api/v1/tokens":
        body["scopes"] = [
            s for s in dict.fromkeys(x for x in body.get("scopes") or [] if isinstance(x, str)) if s in PERMISSIONS
        ]
    if case.operation.path in ("/api/v1/roles", "/api/v1/roles/{role_id}") and "permissions" in body:
        body["permissions"] = [p for p in body["permissions"] or [] if p in PERMISSIONS]
    if case.operation.path == "/api/v1/users":
        body["email"] = f"stateful-{n}@acme.test"
        body.pop("external_id", None)
    if case.operation.path in ("/api/v1/users", "/api/v1/users/{user_id}/roles") and "roles" in body:
        body["roles"] = [r for r in body["roles"] or [] if r in ROLE_NAMES]


def test_stateful_sequences_with_a_session(live: Live) -> None:
    calls: Counter[tuple[str, int, bool]] = Counter()  # (operation, status, id came from a link)
    failures: list[str] = []
    scenarios = [0]

    class Workflow(schema.as_state_machine()):  # type: ignore[misc]
        linked = False

        def setup(self) -> None:
            scenarios[0] += 1

        def step(self, input: Any) -> Any:  # noqa: A002 - schemathesis' name
            self.linked = input.transition is not None and any(
                location.value == "path" for location, _ in input.applied_parameters
            )
            return super().step(input)

        def before_call(self, case: schemathesis.Case) -> None:
            # Never demote or deactivate the caller itself (a random id may be its own): use the stand-in.
            params = case.path_parameters or {}
            if case.operation.path.startswith("/api/v1/users/{user_id}") and str(params.get("user_id")) == str(
                live.admin_id
            ):
                params["user_id"] = live.stand_in_user_id
            realistic(case)

        def get_call_kwargs(self, case: schemathesis.Case) -> dict[str, Any]:
            return {
                "base_url": live.server.url,
                "headers": {"X-CSRF-Token": live.csrf},
                "cookies": {"kbai_session": live.cookie},
                "timeout": 30,
            }

        def after_call(self, response: Any, case: schemathesis.Case) -> None:
            super().after_call(response, case)
            calls[(case.operation.label, response.status_code, self.linked)] += 1

        def validate_response(
            self, response: Any, case: schemathesis.Case, additional_checks: Any = None, **kwargs: Any
        ) -> None:
            # Failures are collected, not raised: Hypothesis would replay the failing sequence against a server
            # whose state has moved on, draw differently ("inconsistent data generation") and hide the failure.
            try:
                case.validate_response(response, checks=CHECKS, transport_kwargs=kwargs or None, recorder=self.recorder)
            except Exception as exc:  # noqa: BLE001 - every failed check is reported below
                failures.append(f"{case.operation.label} -> {response.status_code}: {redact(str(exc))[:2000]}")

    # The server keeps what each sequence did (a name taken, a user deactivated), so the same draws can meet
    # other answers and other next steps later; Hypothesis then stops with "inconsistent data generation".
    # Like schemathesis' own engine, start a new run when that happens, until enough sequences have run.
    runs = 0
    while scenarios[0] < SCENARIOS and runs < MAX_RUNS:
        runs += 1
        run_settings = settings(
            max_examples=SCENARIOS - scenarios[0],
            stateful_step_count=MAX_STEPS,
            deadline=None,
            database=None,
            phases=[Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        try:
            run_state_machine_as_test(Workflow, settings=run_settings)
        except Exception as exc:  # noqa: BLE001 - a report may quote a response that holds a new token
            if isinstance(exc, Flaky) or is_inconsistent_replay(exc):
                continue
            pytest.fail(f"{type(exc).__name__}: {redact(str(exc))[:4000]}", pytrace=False)
    print(
        f"{scenarios[0]} sequences in {runs} runs; (operation, status, id from a link): count",
        *sorted(calls.items()),
        sep="\n  ",
    )
    assert not failures, "\n\n".join(failures[:5])
    assert scenarios[0] >= SCENARIOS // 2, f"only {scenarios[0]} sequences ran in {runs} runs"

    # The run was authenticated throughout and went past the first call of each kind of chain.
    statuses = Counter(status for (_, status, _), n in calls.items() for _ in range(n))
    assert statuses[401] == 0 and statuses[403] == 0, dict(statuses)
    assert not [k for k in calls if k[1] >= 500]
    created = {op for (op, status, _) in calls if status == 201}
    assert {"POST /api/v1/tokens", "POST /api/v1/roles", "POST /api/v1/users"} <= created, created
    followed_ok = {op for (op, status, linked) in calls if linked and 200 <= status < 300}
    assert followed_ok & {
        "GET /api/v1/tokens/{token_id}",
        "POST /api/v1/tokens/{token_id}/revoke",
        "POST /api/v1/tokens/{token_id}/rotate",
        "GET /api/v1/tokens/{token_id}/activity",
    }, followed_ok
    assert followed_ok & {"GET /api/v1/roles/{role_id}", "PUT /api/v1/roles/{role_id}"}, followed_ok
    assert followed_ok & {"PUT /api/v1/users/{user_id}/roles", "POST /api/v1/users/{user_id}/deactivate"}, followed_ok
