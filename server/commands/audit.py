"""The audit trail as a command: ``list-audit-events``, what the console's Audit page shows."""

from __future__ import annotations

from ..service import caller_name
from .command import Answer, Call, Flag, command

#: Events one answer holds, at most (the in-memory trail's length).
MAX_EVENTS = 1000


@command(
    "list-audit-events",
    "this node's recent audit events, newest first: all of them for a caller that may list every role and "
    "auth method, otherwise the caller's own",
    Flag("limit", "int", default=100, help=f"at most this many (1 to {MAX_EVENTS})", minimum=1, maximum=MAX_EVENTS),
)
def list_audit_events(call: Call) -> Answer:
    service, session, limit = call.service, call.caller, call.args["limit"]
    events = service.audit.recent()
    # A refused login's real reason is what a 401 hides: only an administrator of the whole model sees it.
    if not service.may_list_everything(session):
        me = (session.identity.access_id, caller_name(session.identity))
        events = [e for e in events if (e.get("access_id"), e.get("caller")) == me]
    return {"events": events[:limit]}
