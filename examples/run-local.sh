#!/usr/bin/env bash
# Run Moat locally, in development mode, against a private PostgreSQL cluster.
#
# First run: creates the cluster (in /tmp/moat-local-<uid>, unix socket only),
# the owner and runtime roles and the `moat` database, and development keys.
# Every run: applies migrations as the owner, then `moat serve` as the runtime
# role on http://127.0.0.1:8080. Ctrl-C stops Moat and the cluster.
# Needs the PostgreSQL server binaries (apt-get install -y postgresql).
set -euo pipefail
cd "$(dirname "$0")/.."

dir="/tmp/moat-local-$(id -u)"
bin=""
if command -v initdb >/dev/null 2>&1; then
  bin="$(dirname "$(readlink -f "$(command -v initdb)")")"
else
  bin="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
fi
if [ -z "$bin" ] || [ ! -x "$bin/initdb" ] || [ ! -x "$bin/psql" ]; then
  echo "PostgreSQL server binaries not found. Install them:" >&2
  echo "  Debian/Ubuntu: sudo apt-get update && sudo apt-get install -y postgresql" >&2
  echo "  macOS:         brew install postgresql@16" >&2
  exit 1
fi

# initdb refuses to run as root: run the cluster as the `postgres` OS user then.
as_pg=()
if [ "$(id -u)" = 0 ]; then
  as_pg=(setpriv --reuid=postgres --regid=postgres --init-groups --)
fi

mkdir -p "$dir"
chmod 700 "$dir"
[ "$(id -u)" = 0 ] && chown postgres: "$dir"
if [ ! -f "$dir/data/PG_VERSION" ]; then
  echo "creating a private PostgreSQL cluster in $dir"
  "${as_pg[@]}" "$bin/initdb" -D "$dir/data" -U postgres -A trust -E UTF8 --locale=C >/dev/null
fi

"${as_pg[@]}" "$bin/postgres" -D "$dir/data" -k "$dir" -c listen_addresses= >"$dir/postgres.log" 2>&1 &
pg=$!
trap 'kill -INT "$pg" 2>/dev/null; wait "$pg" 2>/dev/null || true' EXIT
for _ in $(seq 100); do
  "$bin/pg_isready" -q -h "$dir" && break
  sleep 0.1
done

"$bin/psql" -q -h "$dir" -U postgres -d postgres -v ON_ERROR_STOP=1 <<'SQL'
SELECT 'CREATE ROLE moat_owner LOGIN' WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'moat_owner') \gexec
SELECT 'CREATE ROLE moat_app LOGIN' WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'moat_app') \gexec
SELECT 'CREATE ROLE moat_runtime NOLOGIN' WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'moat_runtime') \gexec
SELECT 'CREATE ROLE moat_runner NOLOGIN' WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'moat_runner') \gexec
GRANT moat_runtime TO moat_app;
SELECT 'CREATE DATABASE moat OWNER moat_owner' WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = 'moat') \gexec
SQL

cargo build --quiet --bin moat
moat=target/debug/moat

# Development keys, kept for the next run (mode 0600, outside the repository).
if [ ! -f "$dir/keys.env" ]; then
  (umask 077; {
    echo "MOAT_SIGNING_KEY=$("$moat" keygen signing)"
    echo "MOAT_ENCRYPTION_KEY=$("$moat" keygen encryption)"
  } >"$dir/keys.env")
fi
set -a; . "$dir/keys.env"; set +a

DATABASE_URL="host=$dir user=moat_owner dbname=moat" "$moat" migrate
echo "Moat (development mode) on http://127.0.0.1:8080 — try: curl -i http://127.0.0.1:8080/healthz"
MOAT_ENV=development DATABASE_URL="host=$dir user=moat_app dbname=moat" "$moat" serve
