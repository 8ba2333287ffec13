#!/usr/bin/env bash
# Command 1: set up and start kbai on SQLite (./kbai.db) with the Acme demo tenant.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
exec .venv/bin/kbai serve --demo --host "${KBAI_HOST:-127.0.0.1}" --port "${KBAI_PORT:-8000}"
