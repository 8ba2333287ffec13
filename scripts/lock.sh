#!/usr/bin/env bash
# Re-create the hashed lock files that scripts/setup.sh installs from, after a change to the
# dependencies in pyproject.toml. Locked versions are kept unless you pass --upgrade (everything) or
# --upgrade-package NAME. Uses uv (`pip install uv`); one is installed under .venv-tools when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

uv=${UV:-$(command -v uv || true)}
if [[ -z "$uv" ]]; then
  [[ -x .venv-tools/bin/uv ]] || { python3 -m venv .venv-tools && .venv-tools/bin/pip install -q uv; }
  uv=.venv-tools/bin/uv
fi
common=(--universal --python-version 3.11 --generate-hashes --custom-compile-command "scripts/lock.sh")
"$uv" pip compile pyproject.toml "${common[@]}" "$@" -o requirements.lock
"$uv" pip compile pyproject.toml --extra test "${common[@]}" "$@" -o requirements-test.lock
