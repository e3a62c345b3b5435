"""Method 1 — Switch to phone verification.

For someone who lost the authenticator but still has the phone number on file: get a code by SMS, send it
here, press Submit, and the account signs in with phone verification from now on.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from flows.engine import Context
from flows.methods.common import ask_email_step, check_code, code_timers, on_code_timers, send_code, services
from flows.model import Accepts, Choice, Flow, Goto, Outcome, Stay, Step, TimerSpec
from flows.texts import text

LOST_PHONE = Choice("lost_phone", "phone.lost_phone", to="reverify:warn")


LOCKOUT = timedelta(minutes=15)


async def get_code(ctx: Context) -> Outcome:
    locked_until = ctx.data.get("locked_until")
    if locked_until is not None and ctx.now.timestamp() < float(locked_until):
        when = datetime.fromtimestamp(float(locked_until), UTC)
        return Stay(say=(text("phone.still_locked", time=f"{when:%H:%M} UTC"),))
    sending = await send_code(ctx, "phone")
    if not sending.sent:
        return Stay(say=sending.say)
    return Goto("enter_code", say=sending.say, data=sending.data, notify=sending.notify,
                timers=code_timers(ctx, ("enter_code",)))


async def take_code(ctx: Context) -> Outcome:
    status, left, data = await check_code(ctx, "phone")
    if status == "ok":
        return Goto("submit", say=(text("phone.code_ok"),), data={"phone_verified": True})
    if status == "locked":
        until = ctx.now + LOCKOUT
        lockout_over = TimerSpec("lockout_end", until, at_steps=("locked", "get_code"), replace=True)
        return Goto("locked", data={**data, "locked_until": until.timestamp()}, timers=(lockout_over,))
    if status == "wrong":
        return Stay(say=(text("codes.wrong", tries=left),), data=data)
    return Stay(say=(text(f"codes.{status}"),))


async def lockout_over(ctx: Context) -> Outcome:
    return Stay(say=(text("phone.lockout_over"),))


async def submit(ctx: Context) -> Outcome:
    account_id = ctx.data.get("account_id")
    if account_id is not None:
        await services(ctx).directory.switch_to_phone(int(account_id))
    return Goto("done")


PHONE = Flow(
    id="phone",
    title="menu.phone",
    start="ask_email",
    steps=(
        ask_email_step("get_code"),
        Step("get_code", prompt="phone.get_code", on_timer={"lockout_end": lockout_over},
             choices=(Choice("get_code", "phone.btn_get_code", run=get_code, exits=("enter_code",)), LOST_PHONE)),
        Step("enter_code", prompt="phone.enter_code", accepts=Accepts.TEXT, on_input=take_code, expects="code",
             exits=("submit", "locked"), on_timer=on_code_timers("phone"),
             choices=(Choice("resend", "codes.btn_new_code", run=get_code, exits=("enter_code",)), LOST_PHONE)),
        Step("submit", prompt="phone.submit", choices=(Choice("submit", "phone.btn_submit", run=submit,
                                                               exits=("done",)),)),
        Step("locked", prompt="phone.locked", on_timer={"lockout_end": lockout_over},
             choices=(Choice("reverify", "menu.reverify", to="reverify:warn"),
                      Choice("retry", "phone.btn_try_later", to="get_code"))),
        Step("done", prompt="phone.done", final="completed"),
    ),
)
