"""Method 1 — Switch to phone verification.

For someone who lost the authenticator but still has the phone number and the mailbox on file: one press sends a
code by SMS and another by email, the user sends both here and presses Submit, and the account signs in with
phone verification from now on. Two factors are needed because one alone (a SIM swap, or a stolen mailbox) must
never replace another. On Submit withdrawals are locked for a while and the owner is told by email; nothing on
the account changes before Submit.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from flows.directory import SWITCH_TO_PHONE, Change
from flows.methods.common import (
    account_on_file,
    ask_email_step,
    change_account,
    check_code,
    code_timers,
    lock_hours,
    on_code_timers,
    owner_email,
    send_codes,
    services,
    withdrawal_lock,
)
from flows.model import Accepts, Choice, Context, Flow, Goto, Outcome, Stay, Step, TimerSpec, leads_to
from flows.moments import moment, time_of_day
from flows.texts import count, text

LOST_PHONE = Choice("lost_phone", "phone.lost_phone", to="reverify:warn")
NO_EMAIL = Choice("no_email", "phone.no_email", to="reverify:warn")
FACTORS = ("phone", "email")
LOCKOUT = timedelta(minutes=15)


@leads_to("enter_code")
async def get_code(ctx: Context) -> Outcome:
    locked_until = ctx.data.get("locked_until")
    if locked_until is not None and ctx.now.timestamp() < float(locked_until):
        when = datetime.fromtimestamp(float(locked_until), UTC)
        return Stay(say=(text("phone.still_locked", time=time_of_day(when, ctx.language)),))
    sending = await send_codes(ctx, FACTORS)
    if not sending.sent:
        return Stay(say=sending.say)
    forget = {"phone_verified": False, "email_verified": False}
    return Goto("enter_code", say=sending.say, data={**sending.data, **forget}, notify=sending.notify,
                timers=code_timers(ctx))


def _take_code(factor: str, next_step: str, said_when_right: str) -> Any:
    @leads_to(next_step, "locked")
    async def take(ctx: Context) -> Outcome:
        check = await check_code(ctx, factor)
        if check.status == "ok":
            return Goto(next_step, say=(text(said_when_right),), data={f"{factor}_verified": True})
        if check.status == "locked":
            until = ctx.now + LOCKOUT
            lockout_over = TimerSpec("lockout_end", until, replace=True)
            return Goto("locked", data={"locked_until": until.timestamp()}, timers=(lockout_over,),
                        notify=check.notify, audit=check.audit)
        if check.status == "wrong":
            wrong = text(f"phone.wrong_{factor}", tries=count("tries", check.tries_left))
            return Stay(say=(wrong,), notify=check.notify, audit=check.audit)
        return Stay(say=(text(f"codes.{check.status}"),))

    return take


async def lockout_over(ctx: Context) -> Outcome:
    return Stay(say=(text("phone.lockout_over"),))


@leads_to("done", "applying", "get_code")
async def submit(ctx: Context) -> Outcome:
    """Both codes proved: switch to phone verification, lock withdrawals, tell the owner by email, audit it."""
    if not (ctx.data.get("phone_verified") and ctx.data.get("email_verified")):
        return Goto("get_code")
    svc = services(ctx)
    account = await account_on_file(ctx)
    if account is None:  # cannot happen: an unknown email never passes a code
        return Goto("get_code")
    lock, until = await withdrawal_lock(ctx, account.id)
    stamp = moment(until, ctx.language)
    detail = {"case": ctx.case.id if ctx.case else "", "withdrawals_locked_until": until.isoformat()}
    emails = owner_email(svc, account, "phone.changed_email", until=stamp)
    said = text("phone.switched_emailed" if emails else "phone.switched", until=stamp)
    at_once = svc.changes.at_once  # else the user hears the lock and "done" once the service confirms
    then = (said,) if at_once else (said, text("phone.done"))
    await change_account(ctx, ctx.case, account.id, (Change(SWITCH_TO_PHONE), lock), then=then)
    return Goto("done" if at_once else "applying", say=(said,) if at_once else (),
                timers=(TimerSpec("withdrawals_unlocked", until, detached=True),), notify=emails,
                audit=(("account.switched_to_phone", f"account:{account.id}", detail),))


PHONE = Flow(
    id="phone",
    title="menu.phone",
    start="ask_email",
    stages=(("stage.account", ("ask_email",)),
            ("stage.codes", ("get_code", "enter_code", "email_code", "locked")),
            ("stage.switch", ("submit", "done", "applying"))),
    steps=(
        ask_email_step("get_code"),
        Step("get_code", prompt="phone.get_code", on_timer={"lockout_end": lockout_over},
             choices=(Choice("get_code", "phone.btn_get_code", run=get_code), LOST_PHONE)),
        Step("enter_code", prompt="phone.enter_code", accepts=Accepts.TEXT, expects="code",
             on_input=_take_code("phone", "email_code", "phone.sms_ok"), code_factor="phone",
             on_timer=on_code_timers("phone"),
             choices=(Choice("resend", "codes.btn_new_codes", run=get_code), LOST_PHONE)),
        Step("email_code", prompt="phone.email_code", accepts=Accepts.TEXT, expects="code",
             on_input=_take_code("email", "submit", "phone.both_ok"), code_factor="email",
             on_timer=on_code_timers("phone"),
             choices=(Choice("resend", "codes.btn_new_codes", run=get_code), NO_EMAIL)),
        Step("submit", prompt="phone.submit", prompt_params=lock_hours,
             choices=(Choice("submit", "phone.btn_submit", run=submit),)),
        Step("locked", prompt="phone.locked", on_timer={"lockout_end": lockout_over},
             choices=(Choice("reverify", "menu.reverify", to="reverify:warn"),
                      Choice("retry", "phone.btn_try_later", to="get_code"))),
        Step("done", prompt="phone.done", final="completed"),
        Step("applying", prompt="directory.being_applied", final="completed"),
    ),
)
