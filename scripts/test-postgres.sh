#!/usr/bin/env bash
# Print the PostgreSQL URL the tests connect with (KBAI_TEST_PG_URL), creating what they need on a
# server left as Debian installs it (peer over the local socket, scram-sha-256 over TCP, no trust):
#   - KBAI_TEST_PG_URL already set: printed as it is;
#   - the server lets postgres in over TCP without a password (trust): that URL;
#   - otherwise the role kbai_test (LOGIN CREATEDB, nothing more: each test creates and drops its own
#     databases) is created or updated through the local socket as the postgres system user, with a
#     random password kept in KBAI_TEST_PG_PASSWORD_FILE (default ~/.local/state/kbai/test-pg-password).
# KBAI_TEST_PG_PORT picks the server's port (default 5432). Needs root, sudo or to be postgres for step 3.
set -euo pipefail

if [[ -n "${KBAI_TEST_PG_URL:-}" ]]; then
  echo "$KBAI_TEST_PG_URL"
  exit 0
fi
port=${KBAI_TEST_PG_PORT:-5432}
trust_url="postgresql://postgres@127.0.0.1:$port/postgres"
if PGCONNECT_TIMEOUT=3 PGPASSWORD='' PGPASSFILE=/dev/null psql "$trust_url" -w -X -Atqc 'SELECT 1' >/dev/null 2>&1; then
  echo "$trust_url"
  exit 0
fi

file=${KBAI_TEST_PG_PASSWORD_FILE:-${XDG_STATE_HOME:-$HOME/.local/state}/kbai/test-pg-password}
if [[ ! -s "$file" ]]; then
  mkdir -p "$(dirname "$file")"
  (umask 077 && od -An -N24 -tx1 /dev/urandom | tr -d ' \n' > "$file")
fi
password=$(tr -d '\n' < "$file")

as_postgres() {
  if [[ $(id -un) == postgres ]]; then "$@"
  elif [[ $(id -u) == 0 ]]; then runuser -u postgres -- "$@"
  else sudo -u postgres "$@"
  fi
}
(cd / && as_postgres psql -p "$port" -d postgres -X -q -v ON_ERROR_STOP=1 -v pw="$password" >/dev/null) <<'SQL'
SELECT 'CREATE ROLE kbai_test' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'kbai_test') \gexec
ALTER ROLE kbai_test LOGIN CREATEDB NOSUPERUSER PASSWORD :'pw';
SQL
echo "postgresql://kbai_test:$password@127.0.0.1:$port/postgres"
