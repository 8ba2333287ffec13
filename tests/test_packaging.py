"""Packaging: ranges in pyproject.toml, exact hashed versions in the lock files that scripts/setup.sh
installs (and this very environment matches them), a bounded build backend, an SPDX license, project
URLs, py.typed and one source of the version."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
import zipfile
from email.parser import Parser
from importlib import metadata
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

import kbai

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
LOCKS = {"requirements.lock": [], "requirements-test.lock": ["test"]}
PIN = re.compile(r"^([A-Za-z0-9._-]+)==(\S+)(?: ; (.+?))? \\$")


def _lock(name: str) -> dict[str, tuple[str, str | None, int]]:
    """name -> (version, marker, number of hashes) of every package in a lock file."""
    lines = (ROOT / name).read_text(encoding="utf-8").splitlines()
    found: dict[str, tuple[str, str | None, int]] = {}
    for i, line in enumerate(lines):
        m = PIN.match(line)
        if m:
            hashes = 0
            for follow in lines[i + 1 :]:
                if not follow.startswith("    --hash=sha256:"):
                    break
                hashes += 1
            found[canonicalize_name(m.group(1))] = (m.group(2), m.group(3), hashes)
    return found


def _requirements(extras: list[str]) -> list[Requirement]:
    reqs = [Requirement(r) for r in PYPROJECT["project"]["dependencies"]]
    for extra in extras:
        reqs += [Requirement(r) for r in PYPROJECT["project"]["optional-dependencies"][extra]]
    return reqs


def test_pyproject_declares_ranges_not_pins() -> None:
    for req in _requirements(["test"]):
        ops = {spec.operator for spec in req.specifier}
        assert "==" not in ops and "===" not in ops, f"{req}: exact pins belong in the lock file"
        assert ">=" in ops and "<" in ops, f"{req}: give a lower and an upper bound"
    declared = {canonicalize_name(r.name) for r in _requirements([])}
    assert "click" in declared, "kbai imports click itself"
    build = [Requirement(r) for r in PYPROJECT["build-system"]["requires"]]
    assert [r.name for r in build] == ["setuptools"]
    assert {s.operator for s in build[0].specifier} == {">=", "<"}, "the build backend is bounded"


@pytest.mark.parametrize("lock", sorted(LOCKS))
def test_the_lock_pins_every_dependency_with_hashes(lock: str) -> None:
    pins = _lock(lock)
    assert len(pins) > 20
    for name, (version, _marker, hashes) in pins.items():
        assert hashes >= 1, f"{name}=={version} has no hash"
    for req in _requirements(LOCKS[lock]):
        name = canonicalize_name(req.name)
        assert name in pins, f"{req} is not in {lock}: run scripts/lock.sh"
        assert req.specifier.contains(pins[name][0], prereleases=True), (
            f"{lock} pins {name}=={pins[name][0]}, outside {req}"
        )
    if lock == "requirements-test.lock":  # the test lock is the server's lock plus the test tools, same versions
        server = _lock("requirements.lock")
        assert {n: v[0] for n, v in pins.items() if n in server} == {n: v[0] for n, v in server.items()}


def test_this_environment_is_installed_from_the_lock() -> None:
    """scripts/setup.sh --test installed exactly the locked versions (and nothing resolved them anew)."""
    env = default_environment()
    from packaging.markers import Marker

    wrong = {}
    for name, (version, marker, _) in _lock("requirements-test.lock").items():
        if marker and not Marker(marker).evaluate(env):
            continue
        installed = metadata.version(name)
        if installed != version:
            wrong[name] = (installed, version)
    assert not wrong, f"installed vs locked: {wrong}; run ./scripts/setup.sh --test"


def test_version_has_one_source() -> None:
    assert PYPROJECT["project"]["dynamic"] == ["version"] and "version" not in PYPROJECT["project"]
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "kbai.__version__"}
    assert metadata.version("kbai") == kbai.__version__
    done = subprocess.run(
        [str(Path(sys.executable).with_name("kbai")), "--version"], capture_output=True, text=True, timeout=60
    )
    assert (done.returncode, done.stdout, done.stderr) == (0, f"kbai {kbai.__version__}\n", "")


def test_the_wheel_has_an_spdx_license_urls_py_typed_and_the_assets(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-v", "--no-deps", "-w", str(tmp_path), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Deprecat" not in done.stdout + done.stderr, "the build warns about something that will stop working"
    [wheel] = tmp_path.glob("kbai-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        meta = Parser().parsestr(z.read(f"kbai-{kbai.__version__}.dist-info/METADATA").decode())
    assert {
        "kbai/py.typed",
        "kbai/web/static/docs/swagger-init.js",
        "kbai/web/templates/base.html",
        "kbai/store/migrations/versions/0001_initial.py",
    } <= names
    assert meta["Version"] == kbai.__version__
    assert meta["License-Expression"] == "LicenseRef-Proprietary"
    assert meta["License"] is None  # no legacy table form
    assert any(url.startswith("Homepage, https://") for url in meta.get_all("Project-URL") or [])
    requires = [Requirement(r) for r in meta.get_all("Requires-Dist") or []]
    assert "click" in {r.name for r in requires}
    assert not [r for r in requires if any(s.operator == "==" for s in r.specifier)]
