"""The front desk: /start, /help, /cancel, /status and the menu that leads to the three recovery methods."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

from flows.announce import broadcast_button, broadcast_cancel_command, broadcast_command
from flows.changes import APPLIED, FAILED, STAFF_ALERT, text_from_json
from flows.engine import Engine
from flows.events import CommandReceived, TimerFired
from flows.guard import secret_kind
from flows.language_choice import language_button, language_command
from flows.methods.backup_key import BACKUP
from flows.methods.common import services
from flows.methods.enrol import same_key
from flows.methods.phone import PHONE
from flows.methods.reverify import REVERIFY
from flows.model import BACK, Action, Begin, Choice, Close, Context, Flow, Goto, Outcome, Say, Stay, Step, check_links
from flows.moments import countdown
from flows.privacy import delete_command, mydata_command, privacy_button, privacy_command
from flows.services import FlowSettings, staff_chats
from flows.staff import STAFF_TIMERS, purge_undecided, review_button, staff_commands, staff_target
from flows.texts import Text, count, text

METHODS = (PHONE, REVERIFY, BACKUP)
DEEP_LINKS = frozenset(method.id for method in METHODS)  # /start payloads that open a method directly
DECISIONS_RECALLED_FOR = timedelta(days=30)
"""How long after staff decided a case a user who comes back is told the decision again (a rejected user may
have started afresh elsewhere long since; the decision is also on /status while the case is open)."""


async def restart(ctx: Context) -> Outcome:
    return Begin("start")


async def cancel_case(ctx: Context) -> Outcome:
    return Close("cancelled", say=(text("desk.cancelled"),))


START = Flow(
    id="start",
    title="menu.title",
    start="menu",
    steps=(
        Step("menu", prompt="desk.greeting",
             choices=(Choice("phone", "menu.phone", to="phone:ask_email"),
                      Choice("reverify", "menu.reverify", to="reverify:warn"),
                      Choice("backup", "menu.backup", to="backup:ask_email"))),
        Step("resume", prompt="desk.resume",
             choices=(Choice("continue", "desk.btn_continue", to=BACK),
                      Choice("restart", "desk.btn_start_over", run=restart))),
        Step("cancel_confirm", prompt="desk.cancel_confirm",
             choices=(Choice("yes", "desk.btn_cancel_yes", run=cancel_case),
                      Choice("no", "desk.btn_cancel_no", to=BACK))),
    ),
    entries=("resume", "cancel_confirm"),  # detours taken by /start and /cancel
)
RESUME = START.entry("resume")
CANCEL_CONFIRM = START.entry("cancel_confirm")
check_links((START, *METHODS))  # a target that names no step, in a flow or across flows, fails here at import


def _detour(ctx: Context, entry: str) -> Outcome:
    """Ask something (continue? cancel?) and come back; a detour from a detour keeps the first way back."""
    case = ctx.case
    assert case is not None
    if "_return" in case.data and case.flow == "start":
        return Goto(entry)
    return Goto(entry, data={"_return": f"{case.flow}:{case.step}"})


async def start_command(ctx: Context) -> Outcome:
    """The menu; or, from a deep link (t.me/BOT?start=phone, reverify or backup), that method straight away,
    after the warning the menu gives. A case in progress is never replaced without asking."""
    case = ctx.case
    if case is not None and case.status == "review":
        return Say(say=(text("engine.case_waiting"),))
    if case is not None and (case.flow != "start" or "_return" in case.data):
        return _detour(ctx, RESUME)
    payload = ctx.event.args.strip().lower() if isinstance(ctx.event, CommandReceived) else ""
    if payload in DEEP_LINKS:
        return Begin(payload, say=(text("desk.deep_link"),))
    return Begin("start")


async def help_command(ctx: Context) -> Outcome:
    return Say(say=(text("desk.help"),))


async def cancel_command(ctx: Context) -> Outcome:
    if ctx.case is None:
        return Say(say=(text("desk.nothing_to_cancel"),))
    if ctx.case.status != "open":
        return Close("cancelled", say=(text("desk.cancelled"),))
    return _detour(ctx, CANCEL_CONFIRM)


PROVEN = ("phone_verified", "email_verified")


async def status_command(ctx: Context) -> Outcome:
    if ctx.case is None:
        return Say(say=(text("desk.status_none"),))
    return Say(say=(await _status(ctx),))


async def _status(ctx: Context) -> Text:
    case = ctx.case
    assert case is not None
    flow = {flow.id: flow for flow in all_flows()}[case.flow]
    state = text(f"desk.state_{case.status}", since=countdown(ctx.now, case.updated_at, ctx.language))
    details = (*_code_expiry(ctx), *_lockout(ctx), *await _withdrawal_lock(ctx))
    stage = flow.stage_of(case.step)
    step = (text("desk.status_step", number=stage[0], total=len(flow.stages), stage=text(stage[1])) if stage
            else text("desk.status_menu"))
    return text("desk.status", method=text(flow.title), step=step, state=state, details=details)


async def welcome_back(ctx: Context) -> Outcome:
    """A user unblocked the bot: whatever was said to them while it was blocked was not delivered, so tell them
    where their case stands — still with staff, decided (and what was decided), or where they left off — and
    send the authenticator key again if one is waiting to be set up. Nothing is said to a user with nothing open
    and nothing recently decided."""
    case = ctx.case
    if case is not None and case.status == "review":
        return Say(say=(text("desk.back_review"),))
    if case is not None and case.step == "enrol":
        return await same_key(ctx, _decision_told(case.data))
    if case is not None:
        return Stay(say=(text("desk.back_open"), *_decision_told(case.data), await _status(ctx)))
    latest = await services(ctx).tx.cases.latest(ctx.event.sender.chat_id)
    told = _decision_told(latest.data) if latest is not None else ()
    decided_at = float(latest.data.get("decided_at", 0)) if latest is not None else 0.0
    if not told or decided_at < (ctx.now - DECISIONS_RECALLED_FOR).timestamp():
        return Say()
    return Say(say=(text("desk.back_decided"), *told))


def _decision_told(data: Mapping[str, object]) -> tuple[Text, ...]:
    """What staff's latest decision on a case told the user (flows.staff keeps it with the decision)."""
    told = data.get("decision_told")
    return (text_from_json(told),) if isinstance(told, dict) else ()


def _code_expiry(ctx: Context) -> tuple[Text, ...]:
    case = ctx.case
    flows = {flow.id: flow for flow in all_flows()}
    factor = flows[case.flow].step(case.step).code_factor if case and case.flow in flows else None
    sent_at = ctx.data.get(f"{factor}_sent_at") if factor else None
    if sent_at is None:
        return ()
    expires = datetime.fromtimestamp(float(sent_at), UTC) + services(ctx).settings.code_ttl
    key = "desk.code_expires" if expires > ctx.now else "desk.code_expired"
    return (text(key, when=countdown(ctx.now, expires, ctx.language)),)


def _lockout(ctx: Context) -> tuple[Text, ...]:
    until = ctx.data.get("locked_until")
    if until is None or float(until) <= ctx.now.timestamp():
        return ()
    when = datetime.fromtimestamp(float(until), UTC)
    return (text("desk.locked_until", when=countdown(ctx.now, when, ctx.language)),)


async def _withdrawal_lock(ctx: Context) -> tuple[Text, ...]:
    account_id = ctx.data.get("account_id")
    if account_id is None or not any(ctx.data.get(flag) for flag in PROVEN):
        return ()
    account = await services(ctx).directory.get(int(account_id))
    until = account.withdrawals_locked_until if account else None
    if until is None or until <= ctx.now:
        return ()
    return (text("desk.withdrawals_locked", when=countdown(ctx.now, until, ctx.language)),)


COMMANDS: Mapping[str, Action] = {
    "start": start_command,
    "help": help_command,
    "cancel": cancel_command,
    "status": status_command,
    "privacy": privacy_command,
    "mydata": mydata_command,
    "delete": delete_command,
    "language": language_command,
}


def all_flows() -> tuple[Flow, ...]:
    """The desk's menu flow and the three recovery methods."""
    return (START, *METHODS)


async def review_overdue(ctx: Context) -> Outcome:
    """A case has waited for review longer than the SLA: remind the admins, once."""
    case, event = ctx.target, ctx.event
    due_round = event.payload.get("round") if isinstance(event, TimerFired) else None
    if case is None or case.status != "review" or due_round != case.data.get("review_round"):
        return Say()
    settings = services(ctx).settings
    hours = count("hours", int(settings.review_sla.total_seconds() // 3600))
    return Say(say=(text("admin.review_overdue", case=case.id, hours=hours),), to_chats=staff_chats(settings))


async def withdrawals_unlocked(ctx: Context) -> Outcome:
    return Say(say=(text("desk.withdrawals_unlocked"),))


async def change_applied(ctx: Context) -> Outcome:
    """An HTTP directory confirmed a decision's changes: the message the user would have had at once."""
    said = ctx.event.payload.get("say") if isinstance(ctx.event, TimerFired) else None
    return Say(say=tuple(text_from_json(body) for body in said) if isinstance(said, list) else ())


async def change_failed(ctx: Context) -> Outcome:
    return Say(say=(text("directory.change_failed_user"),))


async def change_alert(ctx: Context) -> Outcome:
    """Tell staff that the service refused a change for good (never the user's chat: no staff, no message)."""
    payload = ctx.event.payload if isinstance(ctx.event, TimerFired) else {}
    chats = staff_chats(services(ctx).settings)
    if not chats:
        return Say()
    said = text("directory.change_failed_staff", case=payload.get("case", ""), change=payload.get("change", ""),
                error=payload.get("error", ""))
    return Say(say=(said,), to_chats=chats)


TIMER_HANDLERS: Mapping[str, Action] = {
    "review_sla": review_overdue,
    "withdrawals_unlocked": withdrawals_unlocked,
    APPLIED: change_applied,
    FAILED: change_failed,
    STAFF_ALERT: change_alert,
    **STAFF_TIMERS,
}


def build_engine(settings: FlowSettings) -> Engine:
    """The engine with the desk and the three recovery methods."""
    flows = {flow.id: flow for flow in all_flows()}
    staff = staff_commands({"broadcast": broadcast_command, "broadcast_cancel": broadcast_cancel_command})
    return Engine(flows, {**COMMANDS, **staff}, text_defaults={"service": settings.service_name},
                  guard=secret_kind, timer_handlers=TIMER_HANDLERS, idle_after=settings.idle_reminder,
                  abandon_after=settings.case_timeout, targets=staff_target, on_close=purge_undecided,
                  on_return=welcome_back,
                  button_routes={"r": review_button, "b": broadcast_button, "p": privacy_button,
                                 "l": language_button})
