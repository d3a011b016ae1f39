# Sourced by the scripts that test a real server (schemathesis.sh, interop.sh): the debug
# binary (`cargo test` has built it already; argon2 is optimised even in debug builds) on a
# throwaway SQLite database in $WORK, free loopback ports and a generated admin token.
# Callers export any extra PORTCULLIS__… settings, then call start_server; the server and
# $WORK go when the script exits.

cargo build -q --locked --bin portcullis
BIN=target/debug/portcullis

WORK=$(mktemp -d)
SERVER_PID=
cleanup() {
  if [ -n "$SERVER_PID" ]; then
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
PUBLIC="127.0.0.1:$(free_port)"
ADMIN="127.0.0.1:$(free_port)"
ADMIN_TOKEN=$(python3 -c 'import secrets; print(secrets.token_urlsafe(32))')

export PORTCULLIS__SERVER__PUBLIC_ADDR="$PUBLIC"
export PORTCULLIS__ADMIN__ADDR="$ADMIN"
export PORTCULLIS__ADMIN__TOKEN="$ADMIN_TOKEN"
export PORTCULLIS__DATABASE__URL="sqlite://$WORK/portcullis.db"
export PORTCULLIS__KEYS__MASTER_KEY_FILE="$WORK/master.key"
export PORTCULLIS__LOG__LEVEL=warn
# Stopped by the script, not taken out of a gateway's rotation: no drain delay.
export PORTCULLIS__SERVER__DRAIN_DELAY_MS=0

# Migrates, starts the server and waits (up to 30 s) until it is ready.
start_server() {
  "$BIN" migrate >/dev/null
  "$BIN" serve >"$WORK/server.log" 2>&1 &
  SERVER_PID=$!
  for _ in $(seq 1 300); do
    curl -fsS --max-time 2 "http://$PUBLIC/health/ready" >/dev/null 2>&1 && return 0
    kill -0 "$SERVER_PID" 2>/dev/null || { cat "$WORK/server.log" >&2; exit 1; }
    sleep 0.1
  done
  curl -fsS --max-time 2 "http://$PUBLIC/health/ready" >/dev/null
}
