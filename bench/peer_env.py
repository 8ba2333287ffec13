"""The peers' own venv (bench/.venv-peers) and the tools the suite needs (wrk).

Django 6.1 needs Python 3.12 or newer while kbai runs on the project's interpreter, so the venv is
made from the first Python >= 3.12 found on PATH or under pyenv. Both interpreters' SHA-256 speed is
measured in the same run, so their difference can be read off the results.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
from pathlib import Path

from common import PEERS_VENV, log

PEER_REQUIREMENTS = [
    "django==6.1.3",
    "djangorestframework==3.18.3",
    "djangorestframework-api-key==3.1.0",
    "gunicorn==27.0.1",
]


def _version(python: str) -> tuple[int, int] | None:
    try:
        out = subprocess.run(
            [python, "-c", "import sys; print(*sys.version_info[:2])"], capture_output=True, text=True, timeout=20
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    major, minor = out.stdout.split()
    return int(major), int(minor)


def _candidates() -> list[str]:
    found = [p for p in (shutil.which(f"python3.{m}") for m in range(12, 16)) if p]
    root = os.environ.get("PYENV_ROOT", str(Path.home() / ".pyenv"))
    found += sorted(glob.glob(f"{root}/versions/3.1[2-9]*/bin/python3"))
    found += [p for p in (f"/usr/bin/python3.{m}" for m in range(12, 16)) if Path(p).exists()]
    return found


def find_python() -> str | None:
    """The lowest Python >= 3.12 available (closest to the project's own interpreter)."""
    best: tuple[tuple[int, int], str] | None = None
    for python in _candidates():
        v = _version(python)
        if v and v >= (3, 12) and (best is None or v < best[0]):
            best = (v, python)
    return best[1] if best else None


def ensure_peers_venv() -> str | None:
    """bench/.venv-peers/bin/python with the peers installed; None (and a log line) if impossible."""
    python = PEERS_VENV / "bin" / "python"
    marker = PEERS_VENV / ".bench-requirements"
    wanted = "\n".join(PEER_REQUIREMENTS)
    if python.exists() and marker.exists() and marker.read_text() == wanted:
        return str(python)
    base = find_python()
    if base is None:
        log("no Python >= 3.12 found (Django 6.1 needs one): the peers are skipped")
        return None
    log(f"creating {PEERS_VENV} with {base} and installing {', '.join(PEER_REQUIREMENTS)}")
    if PEERS_VENV.exists():
        shutil.rmtree(PEERS_VENV)
    subprocess.run([base, "-m", "venv", str(PEERS_VENV)], check=True)
    result = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *PEER_REQUIREMENTS],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        log(f"installing the peers failed; they are skipped:\n{result.stderr[-2000:]}")
        return None
    marker.write_text(wanted)
    return str(python)


def ensure_wrk() -> str | None:
    """wrk on PATH, installed from Debian's packages if missing (needs root); None if impossible."""
    path = shutil.which("wrk")
    if path:
        return path
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        log("wrk is missing and cannot be installed here (needs root and apt-get): HTTP figures are skipped")
        return None
    log("installing wrk with apt-get")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-qq", "wrk"]
    if subprocess.run(install, env=env, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True)
        if subprocess.run(install, env=env, capture_output=True).returncode != 0:
            log("apt-get install wrk failed: HTTP figures are skipped")
            return None
    return shutil.which("wrk")
