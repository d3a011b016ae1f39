#!/usr/bin/env bash
# What a replica pays for holding revocations (issue #13, item 5): resident memory and idle
# CPU of a server started on a PostgreSQL database seeded with N revoked tokens, against the
# same server on an empty one. Rows go straight into the table (the server reads them as it
# reads any); each server is measured after start-up, over an idle window.
#
#   BENCH_PG_URL=postgres://postgres@127.0.0.1:5432/postgres bench/revocations.sh
#   REVOCATIONS=1000000 IDLE_SECS=60 BIN=target/release/portcullis bench/revocations.sh
set -euo pipefail
cd "$(dirname "$0")/.."

PG=${BENCH_PG_URL:-postgres://postgres:postgres@127.0.0.1:5432/postgres}
N=${REVOCATIONS:-1000000}
IDLE=${IDLE_SECS:-60}
RELEASE=${BIN:-target/release/portcullis}

source scripts/throwaway-server.sh
if [ ! -x "$RELEASE" ]; then
  cargo build -q --release --locked --bin portcullis
fi
BIN=$RELEASE
TICKS=$(getconf CLK_TCK)
PORTCULLIS__KEYS__MASTER_KEY=$(python3 -c 'import base64, os; print(base64.urlsafe_b64encode(os.urandom(32)).decode().rstrip("="))')
export PORTCULLIS__KEYS__MASTER_KEY

rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# measure ROWS: prints "rows rss_kib idle_cpu_percent"
measure() {
  local rows=$1 db="portcullis_revbench_$$_$1"
  psql -q "$PG" -c "CREATE DATABASE $db" >/dev/null
  local url="${PG%/*}/$db"
  export PORTCULLIS__DATABASE__URL="$url"
  "$BIN" migrate >/dev/null
  # Revoked a minute ago, expiring in 14 days (an Endorsed token's lifetime).
  psql -q "$url" -c "INSERT INTO revoked_tokens (jti, expires_at, revoked_at)
      SELECT gen_random_uuid()::text, now() + interval '14 days', now() - interval '1 minute'
      FROM generate_series(1, $rows)" >/dev/null
  start_server
  sleep 5 # past start-up work
  local ticks_before
  ticks_before=$(cpu_ticks "$SERVER_PID")
  sleep "$IDLE"
  local ticks=$(( $(cpu_ticks "$SERVER_PID") - ticks_before ))
  local rss
  rss=$(rss_kib "$SERVER_PID")
  kill "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=
  psql -q "$PG" -c "DROP DATABASE $db" >/dev/null
  echo "$rows $rss $(python3 -c "print(f'{100 * $ticks / $TICKS / $IDLE:.2f}')")"
}

echo "binary: $BIN; idle window ${IDLE}s; $(nproc) cores"
read -r _ base_rss base_cpu < <(measure 0)
read -r _ rss cpu < <(measure "$N")
printf '%-12s %12s %14s\n' revocations "RSS (MiB)" "idle CPU (%)"
printf '%-12s %12.1f %14s\n' 0 "$(echo "$base_rss / 1024" | bc -l)" "$base_cpu"
printf '%-12s %12.1f %14s\n' "$N" "$(echo "$rss / 1024" | bc -l)" "$cpu"
printf 'cost of %d revocations: %.1f MiB RSS, %s%% of a core while idle (vs %s%% empty)\n' \
  "$N" "$(echo "($rss - $base_rss) / 1024" | bc -l)" "$cpu" "$base_cpu"
