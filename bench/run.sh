#!/usr/bin/env bash
# Portcullis load benchmark (issue 7). Builds the release binary, starts Portcullis on a
# temporary SQLite database (and PostgreSQL when BENCH_PG_URL is set), creates a benchmark
# app and enrollment, and runs bounded loopback-only load with oha against each scenario.
# Prints one table and writes BENCHMARKS.md. See bench/README.md.
#
# Knobs (environment, all optional):
#   DURATION=20s        length of each measured run (oha -z)
#   CONCS="16 64"       concurrencies (keep-alive connections)
#   REPEATS=2           runs per point; the table reports the median
#   WARMUP=3s           discarded warm-up run before each point's runs ("0" = none)
#   SCENARIOS=""        space-separated subset of the scenario names (default: all)
#   BENCH_PG_URL=""     postgres://user@host:port/db where the user may CREATE DATABASE;
#                       a fresh database is created for the run and dropped afterwards
#   STORES=""           "sqlite", "postgres" or both (default: sqlite, plus postgres if
#                       BENCH_PG_URL is set)
#   BENCH_PEER=0        1 = also measure the peer OIDC provider (shared/peer-bench)
#   MINIMAL_BIN=""      use this build of examples/minimal_token_server instead of building
#                       one (the yardstick of the minimal_token scenario, issue 13)
#   FLOOD_CONC=16       connections of the wrong-secret flood in the "mixed" scenario
#   GRANTS_SMALL=10 GRANTS_BIG=100000   grants in the two profiles of the grant-list points
#   GRANT_LIST_BODY='{"limit":10}'      body of POST /profile/auth-grants
#   PORT=18080 ADMIN_PORT=18081 PEER_PORT=18090 MINIMAL_PORT=18095   loopback ports (free
#                       ones are picked if these are taken)
#   LOADGEN_CPUS="" SERVER_CPUS=""      taskset -c lists to pin oha / the server
#   KEEPALIVE=1         0 = a new connection per request
#   BENCH_SERVER_ENV="" extra settings for every server, e.g.
#                       "PORTCULLIS__TOKENS__ALGORITHM=EdDSA"
#   PORTCULLIS_BIN=""   use this binary instead of building one
#   OHA=""              path to oha; else oha on PATH, else $OHA_ROOT/bin/oha, else
#                       `cargo install oha --locked --root $OHA_ROOT`
#   OHA_ROOT=/tmp/oha-root
#   BENCH_OUT=<repo>/BENCHMARKS.md      "-" = print only
#   BENCH_KEEP=0        1 = keep the temp dir (databases, logs, raw oha JSON)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
REPORT="$HERE/report.py"

KNOBS=(DURATION CONCS REPEATS WARMUP SCENARIOS BENCH_PG_URL STORES BENCH_PEER FLOOD_CONC
  GRANTS_SMALL GRANTS_BIG GRANT_LIST_BODY PORT ADMIN_PORT PEER_PORT MINIMAL_PORT LOADGEN_CPUS
  SERVER_CPUS KEEPALIVE BENCH_SERVER_ENV PORTCULLIS_BIN MINIMAL_BIN OHA OHA_ROOT BENCH_OUT
  BENCH_KEEP)
# The exact command, with the knobs that were set (a password in BENCH_PG_URL is hidden).
COMMAND=""
for knob in "${KNOBS[@]}"; do
  if [ -n "${!knob+x}" ]; then
    value="${!knob}"
    [ "$knob" = BENCH_PG_URL ] && value="$(sed -E 's#(://[^:/@]+):[^@]*@#\1:***@#' <<<"$value")"
    if [[ ! "$value" =~ ^[A-Za-z0-9_./:@=,+-]*$ ]]; then
      if [[ "$value" == *"'"* ]]; then value="$(printf '%q' "$value")"; else value="'$value'"; fi
    fi
    COMMAND+="$knob=$value "
  fi
done
COMMAND+="bench/run.sh"

DURATION="${DURATION:-20s}"
CONCS="${CONCS:-16 64}"
REPEATS="${REPEATS:-2}"
WARMUP="${WARMUP:-3s}"
SCENARIOS="${SCENARIOS:-}"
BENCH_PG_URL="${BENCH_PG_URL:-}"
STORES="${STORES:-sqlite${BENCH_PG_URL:+ postgres}}"
BENCH_PEER="${BENCH_PEER:-0}"
FLOOD_CONC="${FLOOD_CONC:-16}"
GRANTS_SMALL="${GRANTS_SMALL:-10}"
GRANTS_BIG="${GRANTS_BIG:-100000}"
DEFAULT_GRANT_LIST_BODY='{"limit":10}'
GRANT_LIST_BODY="${GRANT_LIST_BODY:-$DEFAULT_GRANT_LIST_BODY}"
PORT="${PORT:-18080}"
ADMIN_PORT="${ADMIN_PORT:-18081}"
PEER_PORT="${PEER_PORT:-18090}"
MINIMAL_PORT="${MINIMAL_PORT:-18095}"
LOADGEN_CPUS="${LOADGEN_CPUS:-}"
SERVER_CPUS="${SERVER_CPUS:-}"
KEEPALIVE="${KEEPALIVE:-1}"
BENCH_SERVER_ENV="${BENCH_SERVER_ENV:-}"
OHA_ROOT="${OHA_ROOT:-/tmp/oha-root}"
BENCH_OUT="${BENCH_OUT:-$REPO/BENCHMARKS.md}"
BENCH_KEEP="${BENCH_KEEP:-0}"
PEER_START="$REPO/../shared/peer-bench/peer-oidc/start.sh"
[ -x "$PEER_START" ] || PEER_START="/work/shared/peer-bench/peer-oidc/start.sh"

# Settings come only from what this script passes: nothing inherited may change the server.
unset PORTCULLIS_CONFIG RUST_LOG
while read -r var; do unset "$var"; done < <(compgen -e | grep '^PORTCULLIS__' || true)

# minimal_token is not Portcullis: it runs once, just before the first store's oauth2_token,
# so the two figures of the efficiency ratio are measured minutes apart, not an hour.
ALL_SCENARIOS="minimal_token oauth2_token policy_oauth2_token endorsed_json enrollment_authorize enrollment_bearer \
grant_token_bearer grant_list_small grant_list_big cold_oauth2_token mixed"

for s in $SCENARIOS; do
  [[ " $ALL_SCENARIOS " == *" $s "* ]] || {
    echo "unknown scenario $s (known: $ALL_SCENARIOS)" >&2
    exit 2
  }
done
for s in $STORES; do
  case "$s" in
    sqlite) ;;
    postgres) [ -n "$BENCH_PG_URL" ] || { echo "STORES has postgres: set BENCH_PG_URL" >&2; exit 2; } ;;
    *) echo "unknown store $s (sqlite or postgres)" >&2; exit 2 ;;
  esac
done

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }
need() { command -v "$1" >/dev/null 2>&1 || die "$1 is required${2:+ ($2)}"; }
need curl
need python3

dur_secs() { # oha durations: 20s, 2m, 1h or plain seconds
  case "$1" in
    *ms) echo 1 ;;
    *s) echo "${1%s}" ;;
    *m) echo $((${1%m} * 60)) ;;
    *h) echo $((${1%h} * 3600)) ;;
    *) echo "$1" ;;
  esac
}
now_ns() { date +%s%N; }

# ---- work dir, cleanup ------------------------------------------------------------------
WORK="$(mktemp -d /tmp/portcullis-bench.XXXXXX)"
mkdir -p "$WORK/logs" "$WORK/oha" "$WORK/bin"
: >"$WORK/runs.tsv"
: >"$WORK/startups.tsv"
: >"$WORK/meta.tsv"
SERVER_PID=""
FLOOD_PID=""
PG_DB=""
FAILED=0

meta() { printf '%s\t%s\n' "$1" "$2" >>"$WORK/meta.tsv"; }
note() {
  log "note: $*"
  meta note "$*"
}

alive() { # running, and not a zombie waiting for us to reap it
  kill -0 "$1" 2>/dev/null && [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]
}

stop_pid() { # $1=pid: TERM, up to 10 s to drain, then KILL
  local pid="$1"
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 100); do
    alive "$pid" || break
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

pg_admin() { psql "$BENCH_PG_URL" -v ON_ERROR_STOP=1 -qAtX -c "$1"; }

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  stop_pid "$FLOOD_PID"
  stop_pid "$SERVER_PID"
  if [ -n "$PG_DB" ]; then
    pg_admin "DROP DATABASE IF EXISTS $PG_DB WITH (FORCE)" >/dev/null 2>&1 ||
      log "could not drop PostgreSQL database $PG_DB"
  fi
  if [ "$BENCH_KEEP" = 1 ] || [ "$rc" != 0 ] || [ "$FAILED" != 0 ]; then
    log "kept $WORK (logs, raw oha JSON, data)"
  else
    rm -rf "$WORK"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---- ports --------------------------------------------------------------------------------
port_taken() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
for p in PORT ADMIN_PORT PEER_PORT MINIMAL_PORT; do
  if port_taken "${!p}"; then
    new="$(free_port)"
    log "port ${!p} is taken: $p=$new"
    printf -v "$p" '%s' "$new"
  fi
done
BASE="http://127.0.0.1:$PORT"
ADMIN_BASE="http://127.0.0.1:$ADMIN_PORT"

# ---- tools: the release binary and oha --------------------------------------------------
want_scenario() { [ -z "$SCENARIOS" ] || [[ " $SCENARIOS " == *" $1 "* ]]; }
BUILD=()
[ -z "${PORTCULLIS_BIN:-}" ] && BUILD+=(--bin portcullis)
[ -z "${MINIMAL_BIN:-}" ] && want_scenario minimal_token && BUILD+=(--example minimal_token_server)
if [ "${#BUILD[@]}" -gt 0 ]; then
  need cargo "https://rustup.rs"
  log "building the release binaries (${BUILD[*]})"
  (cd "$REPO" && cargo build --release "${BUILD[@]}") >&2
  TARGET_DIR="$(cd "$REPO" && cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
fi
SOURCE_BIN="${PORTCULLIS_BIN:-${TARGET_DIR:-}/release/portcullis}"
[ -x "$SOURCE_BIN" ] || die "$SOURCE_BIN is not executable"
# Private copies: a rebuild during the run cannot swap a binary under it.
BIN="$WORK/bin/portcullis"
cp "$SOURCE_BIN" "$BIN"
if want_scenario minimal_token; then
  SOURCE_MINIMAL="${MINIMAL_BIN:-${TARGET_DIR:-}/release/examples/minimal_token_server}"
  [ -x "$SOURCE_MINIMAL" ] || die "$SOURCE_MINIMAL is not executable"
  MINIMAL="$WORK/bin/minimal_token_server"
  cp "$SOURCE_MINIMAL" "$MINIMAL"
fi

if [ -z "${OHA:-}" ]; then
  if command -v oha >/dev/null 2>&1; then
    OHA="$(command -v oha)"
  elif [ -x "$OHA_ROOT/bin/oha" ]; then
    OHA="$OHA_ROOT/bin/oha"
  else
    need cargo "https://rustup.rs"
    log "installing oha into $OHA_ROOT (cargo install oha --locked)"
    cargo install oha --locked --root "$OHA_ROOT" >&2
    OHA="$OHA_ROOT/bin/oha"
  fi
fi
[ -x "$OHA" ] || die "oha not found at $OHA"

PIN_LOADGEN=()
[ -n "$LOADGEN_CPUS" ] && PIN_LOADGEN=(taskset -c "$LOADGEN_CPUS")
PIN_SERVER=()
[ -n "$SERVER_CPUS" ] && PIN_SERVER=(taskset -c "$SERVER_CPUS")
KEEPALIVE_ARGS=()
[ "$KEEPALIVE" = 0 ] && KEEPALIVE_ARGS=(--disable-keepalive)

# ---- facts about this run -------------------------------------------------------------------
CPU_MODEL="$(awk -F': ' '/^model name/{print $2; exit}' /proc/cpuinfo)"
MEM_GIB="$(awk '/^MemTotal/{printf "%.1f", $2/1048576}' /proc/meminfo)"
COMMIT="$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)"
if [ -n "$(git -C "$REPO" status --porcelain --untracked-files=no 2>/dev/null)" ]; then
  COMMIT+=" (with uncommitted changes)"
fi
meta date "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
meta machine "$(nproc) cores, ${CPU_MODEL:-unknown CPU}, ${MEM_GIB} GiB RAM, Linux $(uname -r)"
meta commit "$COMMIT"
meta toolchain "$(rustc --version 2>/dev/null || echo 'rustc ?')"
meta oha "$("$OHA" --version)"
meta command "$COMMAND"
meta method "oha on 127.0.0.1 with $([ "$KEEPALIVE" = 0 ] && echo 'a new connection per request' || echo keep-alive), \
load generator on the same cores$([ -n "$LOADGEN_CPUS" ] && echo " (pinned to $LOADGEN_CPUS)"); \
$REPEATS run(s) of $DURATION per point after a $WARMUP warm-up; the server is restarted for every point"
meta grants_small "$GRANTS_SMALL"
meta grants_big "$GRANTS_BIG"
[ -f "$HERE/NOTES.md" ] && meta notes_file "$HERE/NOTES.md"

# ---- servers ------------------------------------------------------------------------------
ADMIN_TOKEN="bench-admin-$(python3 -c 'import secrets; print(secrets.token_urlsafe(32))')"
NO_LIMITS=(PORTCULLIS__RATE_LIMIT__VERIFICATIONS_PER_CLIENT_PER_MINUTE=1000000
  PORTCULLIS__RATE_LIMIT__VERIFICATIONS_PER_IP_PER_MINUTE=1000000)
read -r -a EXTRA_SERVER_ENV <<<"$BENCH_SERVER_ENV"
STORE_ENV=() # set per store: database URL, master key, data dir

portcullis() { # the CLI against the current store; its log lines go to logs/cli.log
  (cd "$DATA_DIR" && env "${STORE_ENV[@]}" "${EXTRA_SERVER_ENV[@]}" "$BIN" "$@") \
    2>>"$WORK/logs/cli.log"
}

cpu_ticks() { # utime + stime of every thread of $SERVER_PID
  awk '{sub(/^.*\) /, ""); print $12 + $13}' "/proc/$SERVER_PID/stat" 2>/dev/null || echo 0
}
peak_rss_kib() { awk '/^VmHWM/{print $2}' "/proc/$SERVER_PID/status" 2>/dev/null || echo 0; }
CLK_TCK="$(getconf CLK_TCK)"

# start_portcullis LABEL KIND [SETTING=VALUE…]: starts `serve`, waits for /health/ready,
# records the time from exec to the first 200 (KIND: first | restart).
start_portcullis() {
  local label="$1" kind="$2"
  shift 2
  local log_file="$WORK/logs/$label.log" t0 code
  t0="$(now_ns)"
  (cd "$DATA_DIR" && exec env "${STORE_ENV[@]}" "${EXTRA_SERVER_ENV[@]}" "$@" \
    "${PIN_SERVER[@]}" "$BIN" serve) >"$log_file" 2>&1 &
  SERVER_PID=$!
  local deadline=$((t0 + 60 * 1000000000))
  while :; do
    code="$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "$BASE/health/ready" || true)"
    [ "$code" = 200 ] && break
    if ! alive "$SERVER_PID"; then
      wait "$SERVER_PID" 2>/dev/null || true
      SERVER_PID=""
      log "server exited during startup; last lines of $log_file:"
      tail -n 5 "$log_file" >&2
      return 1
    fi
    [ "$(now_ns)" -lt "$deadline" ] || { log "server not ready after 60 s"; return 1; }
    sleep 0.005
  done
  local ms=$((($(now_ns) - t0) / 1000000))
  printf '%s\t%s\t%s\t%s\n' "$STORE" "$label" "$kind" "$ms" >>"$WORK/startups.tsv"
}

# The minimal token server (examples/minimal_token_server.rs), with the bench app's client id,
# secret and default scopes, so its tokens and answers are the size of Portcullis's.
start_minimal() {
  (exec env MINIMAL_ADDR="127.0.0.1:$MINIMAL_PORT" MINIMAL_CLIENT_ID="$CLIENT_ID" \
    MINIMAL_CLIENT_SECRET="$CLIENT_SECRET" MINIMAL_SCOPE="$APP_SCOPE" \
    "${PIN_SERVER[@]}" "$MINIMAL") >"$WORK/logs/minimal.log" 2>&1 &
  SERVER_PID=$!
  local deadline=$(($(now_ns) + 30 * 1000000000))
  until [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 -X POST "http://127.0.0.1:$MINIMAL_PORT/oauth2/token" || true)" != 000 ]; do
    alive "$SERVER_PID" || { log "minimal server exited: $(tail -n 3 "$WORK/logs/minimal.log")"; return 1; }
    [ "$(now_ns)" -lt "$deadline" ] || { log "minimal server not answering after 30 s"; return 1; }
    sleep 0.02
  done
}

start_peer() { # the peer OIDC provider; its PID is the last line of start.sh's output
  local out
  out="$(PORT="$PEER_PORT" JWT_ALG=ES256 CPUS="$SERVER_CPUS" "$PEER_START" 2>&1)" || {
    log "peer failed to start: $(tail -n 5 <<<"$out")"
    return 1
  }
  SERVER_PID="$(awk '/^PID /{print $2}' <<<"$out" | tail -n 1)"
  [ -n "$SERVER_PID" ] || { log "peer printed no PID"; return 1; }
  local deadline=$(($(now_ns) + 30 * 1000000000))
  until curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$PEER_PORT/.well-known/openid-configuration"; do
    [ "$(now_ns)" -lt "$deadline" ] || { log "peer not answering after 30 s"; return 1; }
    sleep 0.05
  done
}

stop_server() {
  stop_pid "$SERVER_PID"
  SERVER_PID=""
}

# ---- requests -------------------------------------------------------------------------------
# request METHOD PATH [oha flags…]: the one request a scenario sends, over and over.
REQ_METHOD="" REQ_PATH="" REQ_ARGS=()
request() {
  REQ_METHOD="$1" REQ_PATH="$2"
  shift 2
  REQ_ARGS=("$@")
}

# oha_cmd CONC DURATION: sets OHA_CMD to one bounded run of the current request.
oha_cmd() {
  OHA_CMD=("${PIN_LOADGEN[@]}" "$OHA" --no-tui -w -t 30s -z "$2" -c "$1" "${KEEPALIVE_ARGS[@]}"
    -m "$REQ_METHOD" "${REQ_ARGS[@]}" --output-format json "$TARGET_BASE$REQ_PATH")
}
oha_run() { # CONC DURATION OUT
  oha_cmd "$1" "$2"
  "${OHA_CMD[@]}" >"$3" 2>"$3.stderr"
}

# Status of one request of the current scenario (oha -n 1, so flags need no translating).
probe() {
  local out="$WORK/oha/probe.json"
  "$OHA" --no-tui -n 1 -c 1 -t 30s -m "$REQ_METHOD" "${REQ_ARGS[@]}" --output-format json \
    "$TARGET_BASE$REQ_PATH" >"$out" 2>/dev/null || { echo none; return; }
  python3 "$REPORT" status "$out"
}

# curl_json METHOD URL BEARER [BODY]: prints "STATUS BODY".
curl_json() {
  local method="$1" url="$2" bearer="$3" body="${4:-}" out="$WORK/curl.out" code
  local args=(-s -o "$out" -w '%{http_code}' --max-time 30 -X "$method" -H "Authorization: Bearer $bearer")
  [ -n "$body" ] && args+=(-H 'Content-Type: application/json' --data-binary "$body")
  code="$(curl "${args[@]}" "$url" || echo 000)"
  printf '%s %s' "$code" "$(cat "$out" 2>/dev/null)"
}
json_field() { python3 -c 'import json,sys; v=json.loads(sys.argv[1]); print(v[sys.argv[2]] if sys.argv[2] else v)' "$1" "${2:-}"; }

# ---- scenarios --------------------------------------------------------------------------------
# A scenario is a function `scenario_<name>` that calls `request` once and may set:
#   DESC        one line for the legend
#   LABEL       the name shown in the table (default: the scenario name)
#   EXPECT      the status that counts as success: 2xx (default) or a code such as 401
#   SERVER_ENV  extra settings for this scenario's server (array of NAME=VALUE)
#   NEEDS       a capability found during setup (e.g. grant_list); without it the scenario
#               is skipped with a note
#   FLOOD       1 = the wrong-secret flood runs alongside (the "mixed" scenario)
#   TARGET      portcullis (default) or peer
# A 404 on the first request skips the scenario with a note (a route not there yet).
# Adding one: write the function, add its name to ALL_SCENARIOS, and (if it needs data)
# create that data in prepare_store.

scenario_oauth2_token() {
  DESC="POST /oauth2/token, client_credentials with client_secret_basic, default scopes"
  scenario_oauth2_token_request
}

scenario_oauth2_token_request() {
  request POST /oauth2/token -H "Authorization: Basic $BASIC" \
    -T application/x-www-form-urlencoded -d "grant_type=client_credentials"
}

scenario_policy_oauth2_token() {
  DESC="oauth2_token with a secret that has a policy: an expiry (a day), a CIDR allowlist (127.0.0.0/8), and an app quota per hour and per day (leased from the store in batches, never reached)"
  request POST /oauth2/token -H "Authorization: Basic $POLICY_BASIC" \
    -T application/x-www-form-urlencoded -d "grant_type=client_credentials"
}

scenario_endorsed_json() {
  DESC="POST /api/v1/auth/tokens, JSON body with client_id, client_secret and a scope array"
  request POST /api/v1/auth/tokens -T application/json \
    -d "{\"client_id\":\"$CLIENT_ID\",\"client_secret\":\"$CLIENT_SECRET\",\"grant_type\":\"client_credentials\",\"scope\":[\"all:read\",\"all:write\"]}"
}

scenario_enrollment_authorize() {
  DESC="POST /access/v1/enrollment/authorize, JSON body with app credentials and owner_id (a fresh enrollment token each time)"
  request POST /access/v1/enrollment/authorize -T application/json \
    -d "{\"client_id\":\"$CLIENT_ID\",\"client_secret\":\"$CLIENT_SECRET\",\"owner_id\":\"$OWNER_ID\"}"
}

scenario_enrollment_bearer() {
  DESC="GET /access/v1/enrollment with an enrollment token (bearer verification + enrollment lookup)"
  request GET /access/v1/enrollment -H "Authorization: Bearer $ENROLLMENT_TOKEN"
}

scenario_grant_token_bearer() {
  DESC="GET /auth-grant/{id} with the grant's API token (a bearer-protected grant route)"
  NEEDS=grant_api_token
  request GET "/auth-grant/$GRANT_ID" -H "Authorization: Bearer $GRANT_API_TOKEN"
}

scenario_grant_list_small() {
  DESC="POST /profile/auth-grants body $GRANT_LIST_BODY, profile with $GRANTS_SMALL grants"
  LABEL="grant_list_$GRANTS_SMALL"
  NEEDS=grant_list
  request POST /profile/auth-grants -H "Authorization: Bearer $PROFILE_SMALL_TOKEN" \
    -T application/json -d "$GRANT_LIST_BODY"
}

scenario_grant_list_big() {
  DESC="POST /profile/auth-grants body $GRANT_LIST_BODY, profile with $GRANTS_BIG grants"
  LABEL="grant_list_$GRANTS_BIG"
  NEEDS=grant_list_big
  request POST /profile/auth-grants -H "Authorization: Bearer $PROFILE_BIG_TOKEN" \
    -T application/json -d "$GRANT_LIST_BODY"
}

scenario_cold_oauth2_token() {
  scenario_oauth2_token
  DESC="oauth2_token on a server with credentials.cache_ttl_secs=0: argon2id (default OWASP parameters) on every request; rate limits raised out of the way"
  SERVER_ENV=(PORTCULLIS__CREDENTIALS__CACHE_TTL_SECS=0 "${NO_LIMITS[@]}")
}

scenario_mixed() {
  scenario_oauth2_token
  DESC="oauth2_token (warm cache) measured while mixed_flood sends $FLOOD_CONC connections of client_secret_post requests with distinct wrong secrets (argon2 on each, 401 expected; rate limits raised so every one reaches argon2)"
  SERVER_ENV=("${NO_LIMITS[@]}")
  FLOOD=1
}

scenario_minimal_token() {
  DESC="yardstick: examples/minimal_token_server (axum, form, Basic, HMAC-cached credential check, ES256 with a pre-parsed key; no store, logs, metrics, limits or middleware), POST /oauth2/token as oauth2_token sends it"
  TARGET=minimal
  scenario_oauth2_token_request
}

scenario_peer_oidc_token() {
  DESC="peer: panva oidc-provider (Node), POST /token client_credentials with client_secret_basic, ES256 JWTs, plaintext secrets"
  TARGET=peer
  request POST /token -H "Authorization: Basic $PEER_BASIC" \
    -T application/x-www-form-urlencoded -d "grant_type=client_credentials"
}

# ---- per-store setup ------------------------------------------------------------------------
CAPS=" "
has_cap() { [[ "$CAPS" == *" $1 "* ]]; }

admin_mint() { # an owner token for profile $1 with every scope, for a day
  local reply
  reply="$(curl -s --max-time 30 -H "Authorization: Bearer $ADMIN_TOKEN" -H 'Content-Type: application/json' \
    --data-binary "{\"sub\":\"$1\",\"sub_kind\":\"owner\",\"scope\":\"*:*\",\"expires_in\":86400}" \
    "$ADMIN_BASE/admin/v1/tokens")"
  json_field "$reply" access_token
}

prepare_grants() { # on the running setup server; each step probes its route first
  if ! PROFILE_SMALL_TOKEN="$(admin_mint bench-profile-small)" ||
    ! PROFILE_BIG_TOKEN="$(admin_mint bench-profile-big)"; then
    note "POST /admin/v1/tokens did not mint a profile token: grant scenarios skipped"
    return 0
  fi
  local reply code body i
  reply="$(curl_json POST "$BASE/auth-grant/create" "$PROFILE_SMALL_TOKEN" '{"name":"bench-0","scope":"*:read"}')"
  code="${reply%% *}" body="${reply#* }"
  if [ "$code" = 404 ]; then
    note "POST /auth-grant/create returned 404 (route not there yet): grant scenarios skipped"
    return 0
  fi
  [ "$code" = 200 ] || { note "POST /auth-grant/create returned $code: grant scenarios skipped ($body)"; return 0; }
  GRANT_ID="$(json_field "$body")"
  for i in $(seq 1 $((GRANTS_SMALL - 1))); do
    reply="$(curl_json POST "$BASE/auth-grant/create" "$PROFILE_SMALL_TOKEN" "{\"name\":\"bench-$i\",\"scope\":\"*:read\"}")"
    [ "${reply%% *}" = 200 ] || { note "creating grant $i returned ${reply%% *}: grant scenarios skipped"; return 0; }
  done

  reply="$(curl_json POST "$BASE/auth-grant/$GRANT_ID/api-token" "$PROFILE_SMALL_TOKEN")"
  code="${reply%% *}" body="${reply#* }"
  if [ "$code" = 200 ]; then
    GRANT_API_TOKEN="$(json_field "$body")"
    CAPS+="grant_api_token "
  else
    note "POST /auth-grant/{id}/api-token returned $code: grant_token_bearer skipped"
  fi

  reply="$(curl_json POST "$BASE/profile/auth-grants" "$PROFILE_SMALL_TOKEN" "$GRANT_LIST_BODY")"
  code="${reply%% *}"
  if [ "$code" != 200 ]; then
    note "POST /profile/auth-grants returned $code: grant list scenarios skipped"
    return 0
  fi
  CAPS+="grant_list "
  if ! want_scenario grant_list_big; then return 0; fi

  # The big profile is filled through the API, bounded by count (oha -n).
  log "$STORE: creating $GRANTS_BIG grants for the big profile"
  request POST /auth-grant/create -H "Authorization: Bearer $PROFILE_BIG_TOKEN" \
    -T application/json -d '{"name":"bench","scope":"*:read"}'
  TARGET_BASE="$BASE"
  local out="$WORK/oha/$STORE-seed-grants.json" made
  "$OHA" --no-tui -n "$GRANTS_BIG" -c 16 -t 30s -m "$REQ_METHOD" "${REQ_ARGS[@]}" \
    --output-format json "$BASE$REQ_PATH" >"$out" 2>"$out.stderr" || true
  made="$(python3 "$REPORT" run "$out" 2xx | cut -f6)"
  if [ "${made:-0}" -ge "$GRANTS_BIG" ]; then
    CAPS+="grant_list_big "
  else
    note "only ${made:-0} of $GRANTS_BIG grants were created for the big profile: grant_list_$GRANTS_BIG skipped"
  fi
}

# Fresh database, setup server (its start is the "first start" time), app, enrollment, grants.
prepare_store() {
  STORE="$1"
  DATA_DIR="$WORK/data-$STORE"
  mkdir -p "$DATA_DIR"
  local master db_url
  master="$(python3 -c 'import base64,os; print(base64.urlsafe_b64encode(os.urandom(32)).rstrip(b"=").decode())')"
  case "$STORE" in
    sqlite) db_url="sqlite://$DATA_DIR/portcullis.db" ;;
    postgres)
      [ -n "$BENCH_PG_URL" ] || die "STORES has postgres but BENCH_PG_URL is not set"
      need psql "apt-get install postgresql-client"
      PG_DB="portcullis_bench_$(date +%s)_$$"
      pg_admin "CREATE DATABASE $PG_DB" >/dev/null || die "cannot create database $PG_DB at BENCH_PG_URL"
      db_url="$(python3 -c 'import sys, urllib.parse as u; p=u.urlsplit(sys.argv[1]); print(u.urlunsplit(p._replace(path="/"+sys.argv[2])))' "$BENCH_PG_URL" "$PG_DB")"
      ;;
    *) die "unknown store $STORE (sqlite or postgres)" ;;
  esac
  STORE_ENV=(
    "PORTCULLIS__SERVER__PUBLIC_ADDR=127.0.0.1:$PORT"
    "PORTCULLIS__ADMIN__ADDR=127.0.0.1:$ADMIN_PORT"
    "PORTCULLIS__ADMIN__TOKEN=$ADMIN_TOKEN"
    "PORTCULLIS__DATABASE__URL=$db_url"
    "PORTCULLIS__KEYS__MASTER_KEY=$master"
    "PORTCULLIS__KEYS__MASTER_KEY_FILE=$DATA_DIR/master.key"
    # The load is one client from one address: request limits stay on the path (their
    # cost is measured) but far above what the load generator can send.
    "PORTCULLIS__RATE_LIMIT__REQUESTS_PER_CLIENT_PER_SECOND=10000000"
    "PORTCULLIS__RATE_LIMIT__REQUESTS_PER_IP_PER_SECOND=10000000"
    # The script stops servers itself between points; no gateway needs a drain delay.
    "PORTCULLIS__SERVER__DRAIN_DELAY_MS=0"
    # Production logging, as the container image sets it: JSON lines at info, one audit
    # event per token issued.
    "PORTCULLIS__LOG__FORMAT=json"
    "PORTCULLIS__LOG__LEVEL=info"
    # The big grant-list profile holds GRANTS_BIG active grants.
    "PORTCULLIS__GRANTS__MAX_ACTIVE_PER_PROFILE=$((GRANTS_BIG + GRANTS_SMALL + 10))"
  )
  CAPS=" "
  GRANT_ID="" GRANT_API_TOKEN="" PROFILE_SMALL_TOKEN="" PROFILE_BIG_TOKEN=""

  log "$STORE: first start on an empty database"
  start_portcullis "$STORE-setup" first || die "$STORE: the server did not start"
  local created
  created="$(portcullis apps create --name bench --output env)" || die "apps create failed"
  APP_ID="$(sed -n 's/^APP_ID=//p' <<<"$created")"
  CLIENT_ID="$(sed -n 's/^CLIENT_ID=//p' <<<"$created")"
  CLIENT_SECRET="$(sed -n 's/^CLIENT_SECRET=//p' <<<"$created")"
  if [ -z "$APP_ID" ] || [ -z "$CLIENT_ID" ] || [ -z "$CLIENT_SECRET" ]; then
    die "apps create printed no credentials"
  fi
  BASIC="$(printf '%s:%s' "$CLIENT_ID" "$CLIENT_SECRET" | base64 -w0)"
  # Issue 14's policy scenario: an app of its own with an issuance quota (hourly and daily,
  # far above what the load sends, so every token is leased and counted but none refused),
  # and a second secret with an expiry and a CIDR allowlist.
  local policy policy_app policy_client policy_secret
  policy="$(portcullis apps create --name bench-policy --tokens-per-hour 1000000000 \
    --tokens-per-day 1000000000 --output env)" || die "apps create (policy) failed"
  policy_app="$(sed -n 's/^APP_ID=//p' <<<"$policy")"
  policy_client="$(sed -n 's/^CLIENT_ID=//p' <<<"$policy")"
  policy="$(portcullis apps secrets create "$policy_app" --description bench-policy \
    --expires-in 86400 --allowed-cidr 127.0.0.0/8 --output env)" || die "apps secrets create failed"
  policy_secret="$(sed -n 's/^CLIENT_SECRET=//p' <<<"$policy")"
  [ -n "$policy_client" ] && [ -n "$policy_secret" ] || die "the policy app or secret printed no credentials"
  POLICY_BASIC="$(printf '%s:%s' "$policy_client" "$policy_secret" | base64 -w0)"
  OWNER_ID="bench-owner"
  portcullis enrollments create --app-id "$APP_ID" --owner-id "$OWNER_ID" --output env >/dev/null ||
    die "enrollments create failed"
  local reply
  reply="$(curl -s --max-time 30 -H 'Content-Type: application/json' \
    --data-binary "{\"client_id\":\"$CLIENT_ID\",\"client_secret\":\"$CLIENT_SECRET\",\"owner_id\":\"$OWNER_ID\"}" \
    "$BASE/access/v1/enrollment/authorize")"
  ENROLLMENT_TOKEN="$(json_field "$reply" token)" || die "enrollment authorize failed: $reply"
  reply="$(curl -s --max-time 30 -H "Authorization: Basic $BASIC" -d grant_type=client_credentials \
    "$BASE/oauth2/token")"
  APP_SCOPE="$(json_field "$reply" scope)" || die "the bench app got no token: $reply"

  # Distinct wrong secrets, one body per line: identical ones would share one argon2 run.
  python3 - "$CLIENT_ID" >"$WORK/flood-bodies.txt" <<'PY'
import secrets, sys
for _ in range(20000):
    print(f"grant_type=client_credentials&client_id={sys.argv[1]}&client_secret=pcs_wrong{secrets.token_urlsafe(24)}")
PY

  if want_scenario grant_token_bearer || want_scenario grant_list_small || want_scenario grant_list_big; then
    prepare_grants
  fi
  stop_server
}

finish_store() {
  if [ "$STORE" = postgres ] && [ -n "$PG_DB" ]; then
    pg_admin "DROP DATABASE IF EXISTS $PG_DB WITH (FORCE)" >/dev/null || log "could not drop $PG_DB"
    PG_DB=""
  fi
  [ "$BENCH_KEEP" = 1 ] || rm -rf "$DATA_DIR"
}

# ---- measuring --------------------------------------------------------------------------------
# record LABEL CONC REP OHA_JSON EXPECT CPU_TICKS WALL_NS
record() {
  local label="$1" conc="$2" rep="$3" json="$4" expect="$5" ticks="$6" wall_ns="$7" stats cores
  stats="$(python3 "$REPORT" run "$json" "$expect")" || {
    log "unreadable oha output $json: $(head -c 300 "$json.stderr" 2>/dev/null)"
    FAILED=1
    return 0
  }
  cores="$(awk -v t="$ticks" -v hz="$CLK_TCK" -v w="$wall_ns" 'BEGIN{printf "%.2f", (t / hz) / (w / 1e9)}')"
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$label" "$STORE" "$conc" "$rep" "$stats" "$cores" "$(peak_rss_kib)" \
    >>"$WORK/runs.tsv"
  log "  $label c=$conc run $rep: $(cut -f1 <<<"$stats") req/s, p99 $(cut -f3 <<<"$stats") ms, \
$(($(cut -f4 <<<"$stats") + $(cut -f5 <<<"$stats"))) errors, $cores cores"
}

run_scenario() {
  local name="$1"
  DESC="" LABEL="" EXPECT=2xx SERVER_ENV=() NEEDS="" FLOOD=0 TARGET=portcullis
  "scenario_$name"
  local label="${LABEL:-$name}"
  [ "$FLOOD" = 1 ] && label=mixed_warm
  if [ -n "$NEEDS" ] && ! has_cap "$NEEDS"; then
    log "$STORE: skipping $label (needs $NEEDS)"
    return 0
  fi
  meta legend "$label: $DESC"
  [ "$FLOOD" = 1 ] && meta legend "mixed_flood: the flood's own figures during mixed_warm (req/s = 401 answers per second, i.e. argon2 verifications; the conc column is the warm load's)"
  local c r
  for c in $CONCS; do
    local point="$STORE-$label-c$c"
    if [ "$TARGET" = peer ]; then
      TARGET_BASE="http://127.0.0.1:$PEER_PORT"
      start_peer || { note "$label: the peer did not start"; return 0; }
    elif [ "$TARGET" = minimal ]; then
      TARGET_BASE="http://127.0.0.1:$MINIMAL_PORT"
      start_minimal || { note "$label: the minimal server did not start"; FAILED=1; return 0; }
    else
      TARGET_BASE="$BASE"
      start_portcullis "$point" restart "${SERVER_ENV[@]}" || {
        note "$STORE $label c=$c: the server did not start"
        FAILED=1
        return 0
      }
    fi
    local status
    status="$(probe)"
    if [ "$status" = 404 ]; then
      note "$label: $REQ_METHOD ${REQ_PATH} returned 404 (route not there yet): skipped"
      stop_server
      return 0
    fi
    if [ "$EXPECT" = 2xx ] && [[ "$status" != 2?? ]] || { [ "$EXPECT" != 2xx ] && [ "$status" != "$EXPECT" ]; }; then
      note "$STORE $label: first request returned $status, expected $EXPECT: skipped"
      FAILED=1
      stop_server
      return 0
    fi
    if [ "$WARMUP" != 0 ]; then
      oha_run "$c" "$WARMUP" "$WORK/oha/$point-warmup.json" || true
    fi
    for r in $(seq 1 "$REPEATS"); do
      local out="$WORK/oha/$point-r$r.json" flood_out="$WORK/oha/$point-r$r-flood.json" t0 t1 w0 w1
      if [ "$FLOOD" = 1 ]; then
        # The flood starts first and outlasts the measured run by a second on each side.
        local saved_args=("${REQ_ARGS[@]}")
        REQ_ARGS=(-T application/x-www-form-urlencoded -Z "$WORK/flood-bodies.txt")
        oha_cmd "$FLOOD_CONC" "$(($(dur_secs "$DURATION") + 2))s"
        REQ_ARGS=("${saved_args[@]}")
        "${OHA_CMD[@]}" >"$flood_out" 2>"$flood_out.stderr" &
        FLOOD_PID=$!
        sleep 1
      fi
      t0="$(cpu_ticks)" w0="$(now_ns)"
      oha_run "$c" "$DURATION" "$out" || log "oha exited non-zero: $(head -c 300 "$out.stderr")"
      t1="$(cpu_ticks)" w1="$(now_ns)"
      if [ "$FLOOD" = 1 ]; then
        wait "$FLOOD_PID" || log "flood oha exited non-zero: $(head -c 300 "$flood_out.stderr")"
        FLOOD_PID=""
      fi
      if ! alive "$SERVER_PID"; then
        note "$STORE $label c=$c: the server died during run $r (log: logs/$point.log): point dropped"
        tail -n 5 "$WORK/logs/$point.log" >&2 || true
        FAILED=1
        stop_server
        continue 2
      fi
      record "$label" "$c" "$r" "$out" "$EXPECT" "$((t1 - t0))" "$((w1 - w0))"
      if [ "$FLOOD" = 1 ]; then
        record mixed_flood "$c" "$r" "$flood_out" 401 "$((t1 - t0))" "$((w1 - w0))"
      fi
    done
    stop_server
  done
}

# ---- the run -----------------------------------------------------------------------------------
LIST=""
for s in $ALL_SCENARIOS; do want_scenario "$s" && LIST+="$s "; done
n_points=$(($(wc -w <<<"$LIST") * $(wc -w <<<"$STORES") * $(wc -w <<<"$CONCS")))
per_point=$(($(dur_secs "$WARMUP") + REPEATS * $(dur_secs "$DURATION") + 2))
log "stores: $STORES; scenarios: $LIST; concurrencies: $CONCS; ~$((n_points * per_point / 60 + 1)) min of load (plus setup)"
log "work dir $WORK; public 127.0.0.1:$PORT, admin 127.0.0.1:$ADMIN_PORT"

MINIMAL_DONE=0
for store in $STORES; do
  prepare_store "$store"
  for s in $LIST; do
    if [ "$s" = minimal_token ]; then
      # Once, beside the first store's oauth2_token; it has no store of its own.
      [ "$MINIMAL_DONE" = 1 ] && continue
      MINIMAL_DONE=1
      saved_store="$STORE" STORE=none
      run_scenario minimal_token
      STORE="$saved_store"
      continue
    fi
    run_scenario "$s"
  done
  finish_store
done

if [ "$BENCH_PEER" = 1 ]; then
  if [ -x "$PEER_START" ]; then
    STORE=node
    PEER_BASIC="$(printf '%s:%s' bench-client bench-secret-0123456789abcdef0123456789abcdef | base64 -w0)"
    run_scenario peer_oidc_token
  else
    note "BENCH_PEER=1 but $PEER_START is missing: peer skipped"
  fi
fi

python3 "$REPORT" summary "$WORK" "$BENCH_OUT"
[ "$FAILED" = 0 ] || die "some points failed (see the notes above)"
