#!/usr/bin/env bash
# Soak: the release server under sustained mixed load for a long while, optionally with a
# real PostgreSQL restart in the middle. Fails on any 5xx other than the outage's 503s, on
# memory that keeps growing, or on a server that does not come back ready.
#
# Loopback only, bounded in time. Not part of `cargo test` (the bounded versions are the
# fault tests in tests/api/faults.rs); run it before a release:
#
#   scripts/soak.sh                                   # SQLite, 10 minutes
#   SOAK_DURATION=30m SOAK_PG_URL=postgres://postgres@127.0.0.1:5432/postgres \
#     SOAK_PG_RESTART=1 scripts/soak.sh               # PostgreSQL, restarted halfway
#
# Knobs: SOAK_DURATION (oha syntax, default 10m), SOAK_RATE (token requests per second,
# default 2000), SOAK_PG_URL (empty: SQLite), SOAK_PG_RESTART (1: `pg_ctlcluster restart`
# halfway; needs root on the database host), OHA (path to oha; else on PATH, else installed
# into /tmp/oha-root with cargo).
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION="${SOAK_DURATION:-10m}"
RATE="${SOAK_RATE:-2000}"
PG_URL="${SOAK_PG_URL:-}"
PG_RESTART="${SOAK_PG_RESTART:-0}"
WORK="$(mktemp -d /tmp/portcullis-soak.XXXXXX)"
log() { printf '[soak %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "FAIL: $*"; exit 1; }

secs() { # 90s, 10m, 1h -> seconds
  case "$1" in
    *h) echo $((${1%h} * 3600)) ;; *m) echo $((${1%m} * 60)) ;; *s) echo "${1%s}" ;; *) echo "$1" ;;
  esac
}
TOTAL="$(secs "$DURATION")"

if [ -z "${OHA:-}" ]; then
  if command -v oha >/dev/null 2>&1; then OHA="$(command -v oha)"
  elif [ -x /tmp/oha-root/bin/oha ]; then OHA=/tmp/oha-root/bin/oha
  else
    log "installing oha (cargo install oha --locked --root /tmp/oha-root)"
    cargo install oha --locked --root /tmp/oha-root >&2
    OHA=/tmp/oha-root/bin/oha
  fi
fi

log "building the release binary"
cargo build --release --locked -q
BIN="$PWD/target/release/portcullis"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PORT="$(free_port)"
ADMIN_PORT="$(free_port)"
BASE="http://127.0.0.1:$PORT"
ADMIN="http://127.0.0.1:$ADMIN_PORT"
ADMIN_TOKEN="soak-$(python3 -c 'import secrets; print(secrets.token_urlsafe(32))')"
MASTER="$(head -c 32 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')"
if [ -n "$PG_URL" ]; then
  DB="portcullis_soak_$(date +%s)"
  psql "$PG_URL" -qc "CREATE DATABASE $DB" >/dev/null
  DB_URL="$(python3 -c 'import sys, urllib.parse as u; p=u.urlsplit(sys.argv[1]); print(u.urlunsplit(p._replace(path="/"+sys.argv[2])))' "$PG_URL" "$DB")"
else
  DB_URL="sqlite://$WORK/portcullis.db"
fi

SERVER_PID=""
cleanup() {
  [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null || true
  jobs -p | xargs -r kill 2>/dev/null || true
  [ -n "$PG_URL" ] && psql "$PG_URL" -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
  log "logs and samples kept in $WORK"
}
trap cleanup EXIT

env -i PATH="$PATH" \
  PORTCULLIS__SERVER__PUBLIC_ADDR="127.0.0.1:$PORT" PORTCULLIS__ADMIN__ADDR="127.0.0.1:$ADMIN_PORT" \
  PORTCULLIS__ADMIN__TOKEN="$ADMIN_TOKEN" PORTCULLIS__DATABASE__URL="$DB_URL" \
  PORTCULLIS__KEYS__MASTER_KEY="$MASTER" PORTCULLIS__LOG__FORMAT=json \
  PORTCULLIS__SERVER__DRAIN_DELAY_MS=0 \
  PORTCULLIS__RATE_LIMIT__REQUESTS_PER_CLIENT_PER_SECOND=0 \
  PORTCULLIS__RATE_LIMIT__REQUESTS_PER_IP_PER_SECOND=0 \
  PORTCULLIS__GRANTS__MAX_ACTIVE_PER_PROFILE=1000000 \
  "$BIN" serve >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 1 300); do
  [ "$(curl -s -o /dev/null -w '%{http_code}' "$BASE/health/ready")" = 200 ] && break
  sleep 0.1
done
[ "$(curl -s -o /dev/null -w '%{http_code}' "$BASE/health/ready")" = 200 ] || die "server not ready"

admin() { curl -sf -H "authorization: Bearer $ADMIN_TOKEN" -H 'content-type: application/json' "$@"; }
APP="$(admin -X POST "$ADMIN/admin/v1/apps" -d '{"name":"soak"}')"
CLIENT_ID="$(python3 -c 'import json,sys; print(json.load(sys.stdin)["client_id"])' <<<"$APP")"
CLIENT_SECRET="$(python3 -c 'import json,sys; print(json.load(sys.stdin)["client_secret"])' <<<"$APP")"
PROFILE="$(admin -X POST "$ADMIN/admin/v1/tokens" \
  -d '{"sub":"soak-profile","sub_kind":"owner","scope":"authGrants:read authGrants:write all:read"}' |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')"
BASIC="$(printf '%s:%s' "$CLIENT_ID" "$CLIENT_SECRET" | base64 -w0)"

STORE_NAME=SQLite
[ -n "$PG_URL" ] && STORE_NAME=PostgreSQL
log "load for $DURATION on $STORE_NAME: tokens at $RATE/s, grant reads, grant writes"
"$OHA" --no-tui -w --output-format json -z "$DURATION" -c 16 -q "$RATE" -m POST \
  -H "authorization: Basic $BASIC" -T application/x-www-form-urlencoded \
  -d 'grant_type=client_credentials' "$BASE/oauth2/token" >"$WORK/tokens.json" &
TOKENS=$!
"$OHA" --no-tui -w --output-format json -z "$DURATION" -c 4 -q 200 -m POST \
  -H "authorization: Bearer $PROFILE" -T application/json -d '{"limit":20}' \
  "$BASE/profile/auth-grants" >"$WORK/reads.json" &
READS=$!
# Writes: create a grant and revoke it, over and over; every status is recorded.
(
  end=$((SECONDS + TOTAL))
  while [ "$SECONDS" -lt "$end" ]; do
    out="$(curl -s -w ' %{http_code}' -X POST -H "authorization: Bearer $PROFILE" \
      -H 'content-type: application/json' -d '{"name":"soak"}' "$BASE/auth-grant/create" || echo ' 000')"
    code="${out##* }"
    echo "create $code" >>"$WORK/writes.txt"
    if [ "$code" = 200 ]; then
      id="$(tr -d '"' <<<"${out% *}")"
      code="$(curl -s -o /dev/null -w '%{http_code}' -X POST -H "authorization: Bearer $PROFILE" \
        "$BASE/auth-grant/$id/revoke" || echo 000)"
      echo "revoke $code" >>"$WORK/writes.txt"
    fi
    sleep 0.02
  done
) &
WRITES=$!

# Memory every 10 s; the PostgreSQL restart halfway if asked.
(
  start=$SECONDS restarted=0
  while kill -0 "$TOKENS" 2>/dev/null; do
    printf '%s\t%s\n' "$((SECONDS - start))" "$(awk '/^VmRSS/{print $2}' "/proc/$SERVER_PID/status")" \
      >>"$WORK/rss.tsv"
    if [ "$PG_RESTART" = 1 ] && [ "$restarted" = 0 ] && [ $((SECONDS - start)) -ge $((TOTAL / 2)) ]; then
      log "restarting PostgreSQL"
      pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -n1)" main restart
      restarted=1
    fi
    sleep 10
  done
) &
SAMPLER=$!

wait "$TOKENS" "$READS" "$WRITES" "$SAMPLER"

for _ in $(seq 1 100); do
  [ "$(curl -s -o /dev/null -w '%{http_code}' "$BASE/health/ready")" = 200 ] && break
  sleep 0.1
done
[ "$(curl -s -o /dev/null -w '%{http_code}' "$BASE/health/ready")" = 200 ] || die "not ready after the soak"
kill -0 "$SERVER_PID" || die "the server died"

python3 - "$WORK" "$PG_RESTART" <<'PY'
import json, sys, collections
work, restarted = sys.argv[1], sys.argv[2] == "1"
bad = []
for name in ("tokens", "reads"):
    r = json.load(open(f"{work}/{name}.json"))
    codes = {int(k): v for k, v in r.get("statusCodeDistribution", {}).items()}
    total = sum(codes.values())
    print(f"{name}: {total} responses {dict(sorted(codes.items()))}, "
          f"{r['summary']['requestsPerSec']:.0f} req/s, p99 {r['latencyPercentiles']['p99']*1000:.1f} ms, "
          f"errors {r.get('errorDistribution', {})}")
    allowed = {200} | ({503} if restarted else set())
    if set(codes) - allowed:
        bad.append(f"{name}: unexpected statuses {codes}")
writes = collections.Counter(open(f"{work}/writes.txt").read().split("\n"))
writes.pop("", None)
print(f"writes: {dict(writes)}")
for line in writes:
    code = line.split()[1]
    if code != "200" and not (restarted and code == "503"):
        bad.append(f"writes: {line} x{writes[line]}")
rss = [int(l.split()[1]) for l in open(f"{work}/rss.tsv") if l.strip()]
if len(rss) >= 6:
    third = len(rss) // 3
    early, late = max(rss[third:2 * third]), max(rss[2 * third:])
    print(f"RSS KiB: first {rss[0]}, middle-third peak {early}, last-third peak {late}")
    if late > early * 1.25 + 8192:
        bad.append(f"memory keeps growing: {early} -> {late} KiB")
if bad:
    print("FAIL:\n  " + "\n  ".join(bad))
    sys.exit(1)
print("soak passed")
PY
