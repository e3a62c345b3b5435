"""The front desk: /start, /help, /cancel, /status and the menu that leads to the three recovery methods."""

from __future__ import annotations

from collections.abc import Mapping

from flows.engine import BACK, Context, Engine
from flows.methods.backup_key import BACKUP
from flows.methods.phone import PHONE
from flows.methods.reverify import REVERIFY
from flows.model import Action, Begin, Choice, Close, Flow, Goto, Outcome, Say, Step
from flows.texts import text

METHODS = (PHONE, REVERIFY, BACKUP)


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
)


def _detour(ctx: Context, step: str) -> Outcome:
    case = ctx.case
    assert case is not None
    return Goto(f"start:{step}", data={"_return": f"{case.flow}:{case.step}"})


async def start_command(ctx: Context) -> Outcome:
    if ctx.case is not None and ctx.case.status == "open" and ctx.case.flow != "start":
        return _detour(ctx, "resume")
    return Begin("start")


async def help_command(ctx: Context) -> Outcome:
    return Say(say=(text("desk.help"),))


async def cancel_command(ctx: Context) -> Outcome:
    if ctx.case is None:
        return Say(say=(text("desk.nothing_to_cancel"),))
    if ctx.case.status != "open":
        return Close("cancelled", say=(text("desk.cancelled"),))
    return _detour(ctx, "cancel_confirm")


async def status_command(ctx: Context) -> Outcome:
    case = ctx.case
    if case is None:
        return Say(say=(text("desk.status_none"),))
    flows = {flow.id: flow for flow in (START, *METHODS)}
    method = text(flows[case.flow].title)
    return Say(say=(text("desk.status", method=method, step=case.step, state=text(f"desk.state_{case.status}")),))


COMMANDS: Mapping[str, Action] = {
    "start": start_command,
    "help": help_command,
    "cancel": cancel_command,
    "status": status_command,
}


def build_engine(service_name: str) -> Engine:
    """The engine with the desk and the three recovery methods."""
    flows = {flow.id: flow for flow in (START, *METHODS)}
    return Engine(flows, COMMANDS, text_defaults={"service": service_name})
