#!/usr/bin/env bash
# Interoperability: the official Invopop Go client (a prebuilt binary in the shared folder
# beside the repository, see its README) against a real server on a throwaway SQLite
# database, loopback ports and a generated admin token. Fails unless every check passes.
#
#   scripts/interop.sh
#   INVOPOP_CLIENT=/path/to/invopop-client scripts/interop.sh
set -euo pipefail
cd "$(dirname "$0")/.."

CLIENT="${INVOPOP_CLIENT:-../shared/interop/invopop-client}"
CLIENT_TIMEOUT="${INTEROP_TIMEOUT_SECS:-120}"
if [ ! -f "$CLIENT" ]; then
  echo "interop: $CLIENT not found (the shared folder must sit beside the repository)" >&2
  exit 1
fi

# Already built by `cargo test`; the debug binary keeps CI from paying for a release build.
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

# The shared folder is read-only and a copy of it may have lost the execute bit.
if [ ! -x "$CLIENT" ]; then
  cp "$CLIENT" "$WORK/invopop-client"
  chmod +x "$WORK/invopop-client"
  CLIENT="$WORK/invopop-client"
fi

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
export PORTCULLIS__SERVER__DRAIN_DELAY_MS=0

"$BIN" migrate >/dev/null
"$BIN" serve >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 1 300); do
  curl -fsS --max-time 2 "http://$PUBLIC/health/ready" >/dev/null 2>&1 && break
  kill -0 "$SERVER_PID" 2>/dev/null || { cat "$WORK/server.log" >&2; exit 1; }
  sleep 0.1
done
curl -fsS --max-time 2 "http://$PUBLIC/health/ready" >/dev/null

echo "interop: $CLIENT against http://$PUBLIC"
status=0
PC_BASE="http://$PUBLIC" PC_ADMIN="http://$ADMIN" PC_ADMIN_TOKEN="$ADMIN_TOKEN" \
  timeout "$CLIENT_TIMEOUT" "$CLIENT" || status=$?

if [ "$status" -ne 0 ]; then
  echo "interop: the Invopop client failed (exit $status); server log follows" >&2
  tail -n 50 "$WORK/server.log" >&2
fi
exit "$status"
