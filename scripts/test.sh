#!/usr/bin/env bash
# Command 2: set up (packages, Chromium, nginx, PostgreSQL, Redis) and run every test.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh --test
# PostgreSQL as Debian installs it has no trust: make a test role with a password (see the script).
if url=$(./scripts/test-postgres.sh); then
  export KBAI_TEST_PG_URL="$url"
else
  echo "warning: could not prepare PostgreSQL for the tests; its tests will skip (or fail with KBAI_REQUIRE_SERVICES=1)" >&2
fi
mkdir -p test-artifacts
exec .venv/bin/pytest -n "${KBAI_TEST_WORKERS:-3}" --dist loadfile "$@"
