"""After staff approve a reset: set up a new authenticator.

The bot makes a new secret, sends it as a QR code and as text (deleted from the chat after 10 minutes), and
stores it on the account only once the user proves the app works by sending its current 6-digit code.
"""

from __future__ import annotations

import asyncio
import base64
import io

import segno

from flows.directory import ENROL_AUTHENTICATOR, Change
from flows.methods.common import change_account, count_wrong, services
from flows.model import Accepts, Choice, Context, Goto, Letter, Outcome, Stay, Step, leads_to
from flows.otp import check_totp, new_secret, normalize_code, provisioning_uri
from flows.texts import Text, count, text

KEY_VISIBLE_SECONDS = 600
KEY_MINUTES = KEY_VISIBLE_SECONDS // 60
MAX_WRONG = 10


def qr_png_base64(uri: str) -> str:
    """The otpauth:// URI as a PNG QR code, base64-encoded for the outbox."""
    buffer = io.BytesIO()
    segno.make(uri, error="m").save(buffer, kind="png", scale=6, border=4)
    return base64.b64encode(buffer.getvalue()).decode()


def grouped(secret: str) -> str:
    return " ".join(secret[i : i + 4] for i in range(0, len(secret), 4))


async def new_authenticator(ctx: Context, chat_id: int, email: str) -> tuple[dict[str, object], tuple[Letter, ...]]:
    """A fresh secret (kept encrypted in the case until confirmed) and the two messages that carry it; the QR code
    is drawn in a thread (tens of milliseconds of CPU the event loop need not wait for)."""
    secret = new_secret()
    letters = await key_letters(ctx, chat_id, email, secret)
    return {"pending_totp_enc": services(ctx).box.encrypt(secret), "enrol_wrong": 0}, letters


async def key_letters(ctx: Context, chat_id: int, email: str, secret: str) -> tuple[Letter, ...]:
    """The QR code and the key as text, each deleted from the chat after 10 minutes."""
    uri = provisioning_uri(secret, email, services(ctx).settings.service_name)
    png = await asyncio.to_thread(qr_png_base64, uri)
    return (
        Letter((chat_id,), text("enrol.qr_caption"), png_base64=png, sensitive=True,
               delete_after=KEY_VISIBLE_SECONDS),
        Letter((chat_id,), Text("enrol.key", {"key": grouped(secret), "minutes": count("minutes", KEY_MINUTES)}),
               sensitive=True, delete_after=KEY_VISIBLE_SECONDS),
    )


@leads_to("enrolled", "enrol_applying", "enrol_failed")
async def confirm(ctx: Context) -> Outcome:
    if len(normalize_code(ctx.text)) != 6:
        return Stay(say=(text("backup.not_a_code"),))
    svc = services(ctx)
    secret = svc.box.decrypt(str(ctx.data["pending_totp_enc"]))
    step = check_totp(secret, ctx.text, ctx.now, None)
    if step is None:
        data, left = count_wrong(ctx, "enrol_wrong", MAX_WRONG)
        if left:
            return Stay(say=(text("enrol.wrong", tries=count("tries", left)),), data=data)
        return Goto("enrol_failed", data=data)  # leaving the step removes the key (Step.secrets)
    account_id = int(ctx.data["account_id"])
    enrol = Change(ENROL_AUTHENTICATOR, secret=secret, accepted_step=step)
    await change_account(ctx, ctx.case, account_id, (enrol,), then=(text("enrol.done"),))
    return Goto("enrolled" if svc.changes.at_once else "enrol_applying")  # each step's prompt says which


async def new_key(ctx: Context) -> Stay:
    """A fresh key in place of the one waiting to be confirmed, which then no longer works, for a user who asks
    (their key message was deleted after 10 minutes, say). The wrong codes counted so far still count."""
    case = ctx.case
    assert case is not None
    fresh, letters = await new_authenticator(ctx, case.chat_id, str(case.data.get("email", "")))
    fresh["enrol_wrong"] = case.data.get("enrol_wrong", 0)
    return Stay(say=(text("enrol.new_key"),), data=fresh, letters=letters)


async def same_key(ctx: Context, say: tuple[Text, ...] = ()) -> Stay:
    """The key waiting to be confirmed, sent again (to a user back after blocking the bot, who may never have
    had it, or may have scanned it already: either way it still works)."""
    case = ctx.case
    assert case is not None
    secret = services(ctx).box.decrypt(str(case.data["pending_totp_enc"]))
    letters = await key_letters(ctx, case.chat_id, str(case.data.get("email", "")), secret)
    return Stay(say=(*say, text("enrol.key_again")), letters=letters)


# The last steps of Method 2, entered when staff approve the reset (see flows.staff.approve).
ENROL_STEPS = (
    Step("enrol", prompt="enrol.scan", accepts=Accepts.TEXT, on_input=confirm, expects="code",
         choices=(Choice("new_key", "enrol.btn_new_key", run=new_key),), secrets=("pending_totp_enc",)),
    Step("enrolled", prompt="enrol.done", final="approved"),
    Step("enrol_applying", prompt="directory.being_applied", final="approved"),
    Step("enrol_failed", prompt="enrol.failed", final="approved"),
)
