"""Schemathesis hooks for scripts/schemathesis.sh: real credentials and ids replace the
generated ones in some of the examples, so the fuzzer reaches the success paths too."""

import os

import schemathesis
from hypothesis import strategies as st

CLIENT_ID = os.environ["CLIENT_ID"]
CLIENT_SECRET = os.environ["CLIENT_SECRET"]
OWNER_ID = os.environ["OWNER_ID"]
GRANT_ID = os.environ["GRANT_ID"]
GRANT_TOKEN = os.environ["GRANT_TOKEN"]

# Operations whose body is the only place for the application's credentials.
CREDENTIALS_IN_BODY = {"createEndorsedToken", "createEnrollment"}
# Operations that get HTTP Basic from the config: credentials in the body too are a 400.
BASIC = {"authorizeEnrollment", "oauthToken", "oauthIntrospect", "oauthRevoke"}


def _operation_id(ctx):
    return ctx.operation.definition.raw.get("operationId")


def _with_real_values(operation_id, body):
    body = dict(body)
    if operation_id in CREDENTIALS_IN_BODY:
        body["client_id"] = CLIENT_ID
        body["client_secret"] = CLIENT_SECRET
    if operation_id in BASIC:
        body.pop("client_id", None)
        body.pop("client_secret", None)
    if operation_id == "createEnrollment":
        body["owner_id"] = OWNER_ID
    if operation_id == "authorizeEnrollment":
        body.pop("id", None)
        body["owner_id"] = OWNER_ID
    if operation_id == "oauthToken" and "subject_token" in body:
        body["subject_token"] = GRANT_TOKEN
    if operation_id in {"oauthIntrospect", "oauthRevoke"} and "token" in body:
        body["token"] = GRANT_TOKEN
    if operation_id == "createAuthGrant" and "scope" in body:
        body["scope"] = "*:read"
    return body


@schemathesis.hook
def flatmap_body(ctx, body):
    if not isinstance(body, dict):
        return st.just(body)
    operation_id = _operation_id(ctx)
    return st.sampled_from([body, _with_real_values(operation_id, body)])


@schemathesis.hook
def flatmap_path_parameters(ctx, path_parameters):
    if not path_parameters or "id" not in path_parameters:
        return st.just(path_parameters)
    real = dict(path_parameters, id=GRANT_ID)
    return st.sampled_from([path_parameters, real])
