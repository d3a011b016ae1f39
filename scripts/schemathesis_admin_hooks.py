"""Schemathesis hooks for the admin pass of scripts/schemathesis.sh: the ids of the run's real
application, enrollment and auth grant replace the generated ones in some of the examples, so
the fuzzer reaches the success paths too. The real application is never deleted: the rest of
the run would only see 404s."""

import os

import schemathesis
from hypothesis import strategies as st

APP_ID = os.environ["APP_ID"]
CLIENT_ID = os.environ["CLIENT_ID"]
ENROLLMENT_ID = os.environ["ENROLLMENT_ID"]
GRANT_ID = os.environ["GRANT_ID"]


def _operation_id(ctx):
    return ctx.operation.definition.raw.get("operationId")


def _real_ids(ctx, parameters):
    path = ctx.operation.path
    real = dict(parameters)
    if path.startswith("/admin/v1/apps/{id}"):
        real["id"] = APP_ID
    elif path.startswith("/admin/v1/enrollments/{id}"):
        real["id"] = ENROLLMENT_ID
    elif path == "/admin/v1/grants/{id}/usage":
        real["id"] = GRANT_ID
    return real


@schemathesis.hook
def flatmap_path_parameters(ctx, path_parameters):
    if not path_parameters or "id" not in path_parameters or _operation_id(ctx) == "deleteApp":
        return st.just(path_parameters)
    return st.sampled_from([path_parameters, _real_ids(ctx, path_parameters)])


@schemathesis.hook
def flatmap_body(ctx, body):
    if not isinstance(body, dict):
        return st.just(body)
    real = dict(body)
    operation_id = _operation_id(ctx)
    if operation_id == "createEnrollment":
        real["app_id"] = APP_ID
    elif operation_id == "mintToken" and real.get("sub_kind") == "app":
        real["sub"] = CLIENT_ID
    return st.sampled_from([body, real])
