"""Method 3 — Reset with the backup key.

For someone who saved the 16-character backup key: reinstall the authenticator app, add the account again with
the key (typed or scanned), and send the 6-digit code the app now shows. The key itself never comes to the bot.
"""

from __future__ import annotations

from flows.engine import Context
from flows.methods.common import ask_email_step, count_wrong, services
from flows.model import Accepts, Choice, Flow, Goto, Outcome, Stay, Step
from flows.otp import check_totp, normalize_code
from flows.texts import text

TROUBLESHOOT_AFTER = 2
MAX_WRONG = 5


async def take_code(ctx: Context) -> Outcome:
    if len(normalize_code(ctx.text)) != 6:
        return Stay(say=(text("backup.not_a_code"),))
    if await _code_matches(ctx):
        return Goto("done")
    data, left = count_wrong(ctx, "totp_wrong", MAX_WRONG)
    if left == 0:
        return Goto("too_many", data=data)
    hint = "backup.troubleshoot" if MAX_WRONG - left >= TROUBLESHOOT_AFTER else "backup.wrong"
    return Stay(say=(text(hint, tries=left),), data=data)


async def _code_matches(ctx: Context) -> bool:
    account_id = ctx.data.get("account_id")
    if account_id is None:
        return False
    directory = services(ctx).directory
    account = await directory.get(int(account_id))
    secret = await directory.totp_secret(int(account_id))
    if account is None or secret is None:
        return False
    step = check_totp(secret, ctx.text, ctx.now, account.totp_last_step)
    if step is None:
        return False
    await directory.record_totp_step(int(account_id), step)
    return True


NO_KEY = Choice("no_key", "backup.btn_no_key", to="no_key")

BACKUP = Flow(
    id="backup",
    title="menu.backup",
    start="ask_email",
    steps=(
        ask_email_step("reinstall"),
        Step("reinstall", prompt="backup.reinstall",
             choices=(Choice("installed", "backup.btn_installed", to="add_key"), NO_KEY)),
        Step("add_key", prompt="backup.add_key",
             choices=(Choice("added", "backup.btn_added", to="enter_code"), NO_KEY)),
        Step("enter_code", prompt="backup.enter_code", accepts=Accepts.TEXT, on_input=take_code, expects="code",
             exits=("done", "too_many"), choices=(NO_KEY,)),
        Step("too_many", prompt="backup.too_many",
             choices=(Choice("reverify", "menu.reverify", to="reverify:warn"),
                      Choice("phone", "menu.phone", to="phone:get_code"))),
        Step("no_key", prompt="backup.no_key",
             choices=(Choice("phone", "menu.phone", to="phone:get_code"),
                      Choice("reverify", "menu.reverify", to="reverify:warn"))),
        Step("done", prompt="backup.done", final="completed"),
    ),
)
