#!/usr/bin/env bash
# Command 2: set up (packages, Chromium, nginx, Node.js and the test OpenID provider, PostgreSQL, Redis) and run every test.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh --test
mkdir -p test-artifacts
exec .venv/bin/pytest -n "${KBAI_TEST_WORKERS:-3}" --dist loadfile "$@"
