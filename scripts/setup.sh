#!/usr/bin/env bash
# Set up everything kbai needs on a fresh Debian machine: the venv and Python packages, and with
# --test also Chromium + nginx (apt-get) and running PostgreSQL + Redis for the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
want_test=0
[[ "${1:-}" == "--test" ]] && want_test=1

step() { printf '\033[1m==> %s\033[0m\n' "$*"; }

if [[ ! -x .venv/bin/python ]]; then
  step "creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
fi
if ! .venv/bin/python -c 'import sys; assert sys.version_info >= (3, 11)' 2>/dev/null; then
  echo "error: kbai needs Python 3.11 or newer (set PYTHON=python3.11)" >&2; exit 1
fi

# The exact versions, with hashes, from the lock (scripts/lock.sh makes it from pyproject.toml's ranges);
# then kbai itself, editable, without resolving anything again. Re-run whenever either file changes.
lock=requirements.lock
[[ $want_test == 1 ]] && lock=requirements-test.lock
hash=$(cat pyproject.toml "$lock" | sha256sum | cut -c1-16)
stamp=".venv/.kbai-installed-$hash-$want_test"
if [[ ! -f "$stamp" && ! -f ".venv/.kbai-installed-$hash-1" ]]; then
  step "installing Python packages (exact versions and hashes from $lock)"
  log=$(mktemp)
  pip=(.venv/bin/python -m pip install --disable-pip-version-check)
  if ! { "${pip[@]}" --require-hashes --no-deps -r "$lock" && "${pip[@]}" --no-deps -e . \
         && .venv/bin/python -m pip check; } >"$log" 2>&1; then
    grep -v "^WARNING: Location" "$log" | tail -30 >&2
    echo "error: pip install failed (full log: $log)" >&2; exit 1
  fi
  rm -f "$log" .venv/.kbai-installed-*
  touch "$stamp"
fi

[[ $want_test == 1 ]] || exit 0


as_root() { if [[ $(id -u) == 0 ]]; then "$@"; else sudo "$@"; fi; }

missing=()
command -v chromium >/dev/null || missing+=(chromium)
command -v nginx >/dev/null || [[ -x /usr/sbin/nginx ]] || missing+=(nginx-light)
command -v pg_ctlcluster >/dev/null || missing+=(postgresql)
command -v psql >/dev/null || missing+=(postgresql-client)
command -v redis-server >/dev/null || missing+=(redis-server)
command -v npm >/dev/null || missing+=(nodejs npm)
if (( ${#missing[@]} )); then
  step "installing with apt-get: ${missing[*]}"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if ! pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then
  step "starting PostgreSQL"
  version=$(ls /etc/postgresql | sort -V | tail -1)
  as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  for _ in $(seq 1 30); do pg_isready -h 127.0.0.1 -p 5432 -q && break; sleep 1; done
fi
if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  step "starting Redis"
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no >/dev/null
  for _ in $(seq 1 20); do redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && break; sleep 0.5; done
fi

# axe-core for the accessibility tests (tests/ui/package.json, pinned in its package-lock.json).
lock_hash=$(sha256sum tests/ui/package-lock.json | cut -c1-16)
if [[ ! -f "tests/ui/node_modules/.kbai-installed-$lock_hash" ]]; then
  step "installing axe-core for the accessibility tests (npm ci)"
  npm ci --prefix tests/ui --no-audit --no-fund --loglevel=error >/dev/null
  touch "tests/ui/node_modules/.kbai-installed-$lock_hash"
fi

# Test tools from npm (openapi-typescript, typescript: tests/web/test_openapi_client.py), exactly as
# locked in package-lock.json; installed again when the lock changes.
npm_dir=tests/web/openapi_ts
npm_stamp="$npm_dir/node_modules/.kbai-installed-$(sha256sum "$npm_dir/package-lock.json" | cut -c1-16)"
if command -v npm >/dev/null && [[ ! -f "$npm_stamp" ]]; then
  step "installing the npm test tools (exact versions from $npm_dir/package-lock.json)"
  (cd "$npm_dir" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
  touch "$npm_stamp"
fi
