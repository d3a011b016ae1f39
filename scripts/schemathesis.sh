#!/usr/bin/env bash
# Schema-driven fuzzing of the public API, then of the admin API: starts the server on a
# throwaway SQLite database and random free ports, creates real credentials, and runs a pinned
# schemathesis against the server's own /openapi.json, then against /admin/v1/openapi.json on
# the admin listener. Any 5xx, or any response its document does not allow, fails the run.
#
#   scripts/schemathesis.sh                          # defaults
#   SCHEMATHESIS_MAX_EXAMPLES=100 SCHEMATHESIS_ADMIN_MAX_EXAMPLES=50 scripts/schemathesis.sh
#   SCHEMATHESIS_PASSES=admin scripts/schemathesis.sh    # one pass only: public, admin
#
# The server is started as scripts/throwaway-server.sh says.
set -euo pipefail
cd "$(dirname "$0")/.."

SCHEMATHESIS_VERSION=4.32.5
MAX_EXAMPLES="${SCHEMATHESIS_MAX_EXAMPLES:-100}"
ADMIN_MAX_EXAMPLES="${SCHEMATHESIS_ADMIN_MAX_EXAMPLES:-50}"
PASSES="${SCHEMATHESIS_PASSES:-public admin}"
VENV=target/schemathesis-venv

if [ "$("$VENV/bin/schemathesis" --version 2>/dev/null)" != "schemathesis, version $SCHEMATHESIS_VERSION" ]; then
  echo "schemathesis: installing $SCHEMATHESIS_VERSION into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi

source scripts/throwaway-server.sh

# Cheap hashing and generous limits: the fuzzer sends thousands of wrong secrets, and a
# locked-out client would leave the success paths untested (429 is still documented).
export PORTCULLIS__CREDENTIALS__ARGON2_MEMORY_KIB=8192
export PORTCULLIS__CREDENTIALS__ARGON2_ITERATIONS=1
export PORTCULLIS__RATE_LIMIT__VERIFICATIONS_PER_CLIENT_PER_MINUTE=100000
export PORTCULLIS__RATE_LIMIT__VERIFICATIONS_PER_IP_PER_MINUTE=100000
# Limits stay on (their 429s are documented) but high enough that the run explores the
# routes instead of the limiter; the same goes for the cap on a profile's active grants.
export PORTCULLIS__RATE_LIMIT__REQUESTS_PER_CLIENT_PER_SECOND=100000
export PORTCULLIS__RATE_LIMIT__REQUESTS_PER_IP_PER_SECOND=100000
export PORTCULLIS__GRANTS__MAX_ACTIVE_PER_PROFILE=1000000

start_server

json_field() { python3 -c "import json, sys; print(json.load(sys.stdin)$1)"; }

# An application, one of its enrollments, and tokens for each kind of bearer route.
eval "$("$BIN" apps create --name schemathesis --output env)"
OWNER_ID=schemathesis-owner
eval "$("$BIN" enrollments create --app-id "$APP_ID" --owner-id "$OWNER_ID" --output env)"
ENROLLMENT_TOKEN=$(curl -fsS -u "$CLIENT_ID:$CLIENT_SECRET" -H 'content-type: application/json' \
  -d "{\"owner_id\":\"$OWNER_ID\"}" "http://$PUBLIC/access/v1/enrollment/authorize" | json_field '["token"]')
OWNER_TOKEN=$(curl -fsS -H "authorization: Bearer $ADMIN_TOKEN" -H 'content-type: application/json' \
  -d "{\"sub\":\"$OWNER_ID\",\"sub_kind\":\"owner\",\"scope\":\"*:read *:write\"}" \
  "http://$ADMIN/admin/v1/tokens" | json_field '["access_token"]')
GRANT_ID=$(curl -fsS -H "authorization: Bearer $OWNER_TOKEN" -H 'content-type: application/json' \
  -d '{"name":"schemathesis"}' "http://$PUBLIC/auth-grant/create" | json_field '')
GRANT_TOKEN=$(curl -fsS -X POST -H "authorization: Bearer $OWNER_TOKEN" \
  "http://$PUBLIC/auth-grant/$GRANT_ID/api-token" | json_field '')
export CLIENT_ID CLIENT_SECRET OWNER_ID OWNER_TOKEN ENROLLMENT_ID ENROLLMENT_TOKEN GRANT_ID GRANT_TOKEN

cat >"$WORK/schemathesis.toml" <<TOML
[auth.openapi.clientBasic]
username = "\${CLIENT_ID}"
password = "\${CLIENT_SECRET}"

[auth.openapi.bearerToken]
bearer = "\${OWNER_TOKEN}"

# The enrollment routes speak for the enrollment, not for its owner.
[[operations]]
include-operation-id = ["showEnrollment", "updateEnrollment", "updateEnrollmentByPost"]
headers = { Authorization = "Bearer \${ENROLLMENT_TOKEN}" }
TOML

status=0
# Run from the scratch directory: schemathesis keeps a cache in its working directory.
ROOT=$(pwd)
if [[ " $PASSES " == *" public "* ]]; then
echo "schemathesis: $SCHEMATHESIS_VERSION against http://$PUBLIC, $MAX_EXAMPLES examples per operation"
(
  cd "$WORK"
  PYTHONPATH="$ROOT/scripts" PYTHONDONTWRITEBYTECODE=1 SCHEMATHESIS_HOOKS=schemathesis_hooks \
    "$ROOT/$VENV/bin/schemathesis" --config-file "$WORK/schemathesis.toml" run \
    "http://$PUBLIC/openapi.json" \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,response_headers_conformance \
    --max-examples "$MAX_EXAMPLES" \
    --generation-database "$ROOT/target/schemathesis-examples" \
    --workers 2 \
    --seed "${SCHEMATHESIS_SEED:-$RANDOM}" \
    --suppress-health-check all \
    --no-color
) || status=$?
fi

# The admin API, against its own document, after the public pass (it deletes, disables and
# rotates what the public pass relies on). Fewer examples: it is 26 cheap operations.
if [ "$status" -eq 0 ] && [[ " $PASSES " == *" admin "* ]]; then
  cat >"$WORK/schemathesis-admin.toml" <<TOML
[auth.openapi.adminToken]
bearer = "\${ADMIN_TOKEN}"
TOML
  export ADMIN_TOKEN APP_ID
  echo "schemathesis: the admin API at http://$ADMIN, $ADMIN_MAX_EXAMPLES examples per operation"
  (
    cd "$WORK"
    PYTHONPATH="$ROOT/scripts" PYTHONDONTWRITEBYTECODE=1 SCHEMATHESIS_HOOKS=schemathesis_admin_hooks \
      "$ROOT/$VENV/bin/schemathesis" --config-file "$WORK/schemathesis-admin.toml" run \
      "http://$ADMIN/admin/v1/openapi.json" \
      -H "Authorization: Bearer $ADMIN_TOKEN" \
      --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,response_headers_conformance \
      --max-examples "$ADMIN_MAX_EXAMPLES" \
      --generation-database "$ROOT/target/schemathesis-admin-examples" \
      --workers 2 \
      --seed "${SCHEMATHESIS_SEED:-$RANDOM}" \
      --suppress-health-check all \
      --no-color
  ) || status=$?
fi

if [ "$status" -ne 0 ]; then
  echo "schemathesis: failed; server log follows" >&2
  tail -n 50 "$WORK/server.log" >&2
fi
exit "$status"
