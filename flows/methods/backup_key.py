"""Method 3 — Reset with the backup key.

For someone who saved the 16-character backup key: reinstall the authenticator app, add the account again with
the key (typed or scanned), and send the 6-digit code the app now shows. The key itself never comes to the bot.
"""

from __future__ import annotations

from flows.directory import NO_ACCOUNT
from flows.methods.common import account_on_file, ask_email_step, count_wrong, failed_check, services
from flows.model import Accepts, Choice, Context, Flow, Goto, Outcome, Stay, Step, leads_to
from flows.otp import normalize_code
from flows.texts import count, text

TROUBLESHOOT_AFTER = 2
MAX_WRONG = 5


@leads_to("done", "too_many")
async def take_code(ctx: Context) -> Outcome:
    if len(normalize_code(ctx.text)) != 6:
        return Stay(say=(text("backup.not_a_code"),))
    if await _code_matches(ctx):
        return Goto("done")
    notify, audit = await failed_check(ctx, "totp")
    data, left = count_wrong(ctx, "totp_wrong", MAX_WRONG)
    if left == 0:
        return Goto("too_many", data=data, notify=notify, audit=audit)
    hint = "backup.troubleshoot" if MAX_WRONG - left >= TROUBLESHOOT_AFTER else "backup.wrong"
    return Stay(say=(text(hint, tries=count("tries", left)),), data=data, notify=notify, audit=audit)


async def _code_matches(ctx: Context) -> bool:
    """Whether the code is the account's current one. A paused account is checked like an unknown email (the
    directory does the same work for no account and finds no match), so a right code is not used up meanwhile."""
    svc = services(ctx)
    account = await account_on_file(ctx)
    paused = await svc.failures.paused(account.id if account else None)
    checked = account.id if account is not None and not paused else NO_ACCOUNT
    return await svc.directory.verify_totp(checked, ctx.text) and checked != NO_ACCOUNT


NO_KEY = Choice("no_key", "backup.btn_no_key", to="no_key")

BACKUP = Flow(
    id="backup",
    title="menu.backup",
    start="ask_email",
    stages=(("stage.account", ("ask_email",)),
            ("stage.reinstall", ("reinstall",)),
            ("stage.add_key", ("add_key", "no_key")),
            ("stage.code", ("enter_code", "too_many", "done"))),
    steps=(
        ask_email_step("reinstall"),
        Step("reinstall", prompt="backup.reinstall",
             choices=(Choice("installed", "backup.btn_installed", to="add_key"), NO_KEY)),
        Step("add_key", prompt="backup.add_key",
             choices=(Choice("added", "backup.btn_added", to="enter_code"), NO_KEY)),
        Step("enter_code", prompt="backup.enter_code", accepts=Accepts.TEXT, on_input=take_code, expects="code",
             choices=(NO_KEY,)),
        Step("too_many", prompt="backup.too_many",
             choices=(Choice("reverify", "menu.reverify", to="reverify:warn"),
                      Choice("phone", "menu.phone", to="phone:get_code"))),
        Step("no_key", prompt="backup.no_key",
             choices=(Choice("phone", "menu.phone", to="phone:get_code"),
                      Choice("reverify", "menu.reverify", to="reverify:warn"))),
        Step("done", prompt="backup.done", final="completed"),
    ),
)
