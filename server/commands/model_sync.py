"""The model as a whole, for policy authors: ``export-model``, ``apply-model``, ``who-can`` and ``can``.

Each answer names objects of the whole model, so each needs ``list`` on every role and auth method first;
``apply-model`` then needs every decision the single commands would (see ``cedarkey.server.apply``).
"""

from __future__ import annotations

import time

import orjson
from cedarkey.policies import can as can_decide
from cedarkey.policies import resolve_identity, state_from_json, state_from_model, state_to_json
from cedarkey.policies import who_can as who_can_analysis
from cedarkey.policies.apply import Prepared, loaded_author_policies
from starlette.concurrency import run_in_threadpool

from ..apply import apply_desired, stored_author_policies
from ..errors import bad_request
from ..store import AuditEvent
from .command import ASKED_CAPABILITY, ASKED_PATH, RULE_TYPE, Answer, Call, Flag, command


@command(
    "export-model",
    "the access model as JSON: auth methods, roles with associations and rules, author Cedar files "
    "(needs list on every role and auth method)",
    reads_everything=True,
)
async def export_model(call: Call) -> Answer:
    engine = call.service.engine
    stored = await run_in_threadpool(stored_author_policies, call.service.store)
    return state_to_json(state_from_model(engine.model, loaded_author_policies(engine, stored)))


@command(
    "apply-model",
    "make the model what --model says, all or nothing: aws_iam auth methods, roles but /admin, author "
    "Cedar (see policies/README.md); needs list on everything and the decisions the single commands need",
    Flag("model", "secret", required=True, help="the desired model, in export-model's JSON (a string)"),
    Flag("dry-run", "int", help="1: answer the plan only, change nothing", minimum=0, maximum=1),
    reads_everything=True,
)
async def apply_model(call: Call) -> Answer:
    try:
        desired = state_from_json(orjson.loads(call.args["model"]))
    except orjson.JSONDecodeError:
        raise bad_request("model: not valid JSON") from None
    dry_run = bool(call.args.get("dry-run"))
    service = call.service

    def event(prepared: Prepared) -> AuditEvent:
        return service.event(call.caller, "apply-model", **prepared.plan.summary(), created=sorted(prepared.created))

    prepared = await apply_desired(service, desired, session=call.caller, dry_run=dry_run, event=event)
    applied = not dry_run and bool(prepared.plan or prepared.ops)
    out: Answer = {"plan": prepared.plan.to_dict(), "applied": applied, "dry-run": dry_run}
    if applied:
        out["created"] = dict(prepared.created)
    return out


@command(
    "who-can",
    "every auth method, association and rule through which some identity gets a capability on a path, "
    "and the denies that stop it (needs list on every role and auth method)",
    ASKED_PATH,
    ASKED_CAPABILITY,
    RULE_TYPE,
    reads_everything=True,
)
def who_can(call: Call) -> Answer:
    args = call.args
    return who_can_analysis(call.service.engine, args["capability"], args["path"], args["rule-type"]).to_dict()


@command(
    "can",
    "the decision for an identity (JSON of its attributes) with the policies that made it, and its login "
    "(needs list on every role and auth method)",
    Flag("identity", required=True, help='JSON attributes, e.g. {"auth_method": "iamAuth1", ...}'),
    ASKED_PATH,
    ASKED_CAPABILITY,
    RULE_TYPE,
    reads_everything=True,
)
def can(call: Call) -> Answer:
    args, engine = call.args, call.service.engine
    try:
        data = orjson.loads(args["identity"])
    except orjson.JSONDecodeError:
        raise bad_request("identity: not valid JSON") from None
    identity = resolve_identity(data, engine.model)
    return can_decide(engine, identity, args["capability"], args["path"], args["rule-type"], int(time.time()))
