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

source scripts/throwaway-server.sh

# The shared folder is read-only and a copy of it may have lost the execute bit.
if [ ! -x "$CLIENT" ]; then
  cp "$CLIENT" "$WORK/invopop-client"
  chmod +x "$WORK/invopop-client"
  CLIENT="$WORK/invopop-client"
fi

start_server

echo "interop: $CLIENT against http://$PUBLIC"
status=0
PC_BASE="http://$PUBLIC" PC_ADMIN="http://$ADMIN" PC_ADMIN_TOKEN="$ADMIN_TOKEN" \
  timeout "$CLIENT_TIMEOUT" "$CLIENT" || status=$?

if [ "$status" -ne 0 ]; then
  echo "interop: the Invopop client failed (exit $status); server log follows" >&2
  tail -n 50 "$WORK/server.log" >&2
fi
exit "$status"
