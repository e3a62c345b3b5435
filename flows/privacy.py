"""What the desk keeps about a user, told (/privacy), handed over (/mydata) and erased (/delete).

The export holds only what the user gave or was shown and what is the same whatever the account: the email as
they typed it, what they asked to restore, the country and document type they chose, which checks they passed,
and the cases' steps, states and times. Never a secret (no code, no key, no answer), nothing read from the
account (the security question, whether it is verified, its id: an export must not tell whether an email has
an account), and no file: the identity photos are counted, not sent back.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from flows.events import ButtonPressed
from flows.methods.common import services
from flows.model import Context, Letter, Outcome, Say
from flows.records import Case
from flows.texts import count, text

EXPORTED_CASES = 100
EXPORTED_DATA = ("email", "restore", "country", "id_type", "phone_verified", "email_verified", "answer_verified",
                 "decision", "decided_at")
"""The case data an export may show: the user's own input, and what staff decided."""
PHOTOS = "photo_"
PRIVACY_DATA = re.compile(r"^p:(\d{1,15}):(erase|keep)$")
ALL_CASES = 100_000


async def privacy_command(ctx: Context) -> Outcome:
    settings = services(ctx).settings
    days = count("days", int(settings.document_retention.total_seconds() // 86400))
    return Say(say=(text("privacy.notice", documents=days),))


async def mydata_command(ctx: Context) -> Outcome:
    """The user's cases as a JSON file, in this chat only (a sensitive letter: blanked in the outbox once sent)."""
    sender = ctx.event.sender
    cases = await services(ctx).tx.cases.of_user(sender.user_id, EXPORTED_CASES)
    export = {
        "exported_at": _iso(ctx.now),
        "telegram_user_id": sender.user_id,
        "cases": [case_export(case) for case in cases],
    }
    body = json.dumps(export, indent=2, ensure_ascii=False).encode()
    letter = Letter((sender.chat_id,), text("privacy.mydata_caption", cases=count("cases", len(cases))),
                    document=("my-data.json", base64.b64encode(body).decode()), sensitive=True)
    return Say(letters=(letter,))


async def delete_command(ctx: Context) -> Outcome:
    """Ask before erasing; not while a recovery is in progress (staff may be reviewing it)."""
    if ctx.case is not None:
        return Say(say=(text("privacy.delete_finish_first"),))
    user_id = ctx.event.sender.user_id
    buttons = ((("privacy.btn_erase", f"p:{user_id}:erase"), ("privacy.btn_keep", f"p:{user_id}:keep")),)
    return Say(letters=(Letter((ctx.event.sender.chat_id,), text("privacy.delete_confirm"), buttons),))


async def privacy_button(ctx: Context) -> Outcome:
    """Erase (or keep) the presser's data. A button names its user: nobody else's press counts."""
    event = ctx.event
    match = PRIVACY_DATA.match(event.data) if isinstance(event, ButtonPressed) else None
    if match is None or int(match.group(1)) != event.sender.user_id:
        return Say(say=(text("engine.button_expired"),))
    if match.group(2) == "keep":
        return Say(say=(text("privacy.kept"),))
    if ctx.case is not None:
        return Say(say=(text("privacy.delete_finish_first"),))
    tx = services(ctx).tx
    user_id = event.sender.user_id
    for case in await tx.cases.of_user(user_id, ALL_CASES):  # the staff chat's copies of their photos go too
        if any(isinstance(value, dict) for key, value in case.data.items() if key.startswith(PHOTOS)):
            await tx.evidence.forget(case.id, ctx.now)
    erased = await tx.erasure.erase_user(user_id, ctx.now)
    return Say(say=(text("privacy.erased"),), audit=(("privacy.erased", f"user:{user_id}", {"cases": erased}),))


def case_export(case: Case) -> dict[str, Any]:
    data: Mapping[str, Any] = case.data
    shown = {key: data[key] for key in EXPORTED_DATA if data.get(key) is not None}
    if isinstance(shown.get("decided_at"), int | float):
        shown["decided_at"] = _iso(datetime.fromtimestamp(float(shown["decided_at"]), UTC))
    photos = sum(1 for key, value in data.items() if key.startswith(PHOTOS) and value)
    return {
        "case": case.id,
        "method": case.flow,
        "step": case.step,
        "status": case.status,
        "opened_at": _iso(case.created_at),
        "updated_at": _iso(case.updated_at),
        **shown,
        **({"identity_photos_sent": photos} if photos else {}),
    }


def _iso(when: datetime | None) -> str | None:
    return when.astimezone(UTC).isoformat(timespec="seconds") if when is not None else None
