"""What the desk keeps about a user, told (/privacy) and handed over (/mydata).

The export holds only what the user gave or was shown and what is the same whatever the account: the email as
they typed it, what they asked to restore, the country and document type they chose, which checks they passed,
and the cases' steps, states and times. Never a secret (no code, no key, no answer), nothing read from the
account (the security question, whether it is verified, its id: an export must not tell whether an email has
an account), and no file: the identity photos are counted, not sent back.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from flows.methods.common import services
from flows.model import Context, Letter, Outcome, Say
from flows.records import Case
from flows.texts import count, text

EXPORTED_CASES = 100
EXPORTED_DATA = ("email", "restore", "country", "id_type", "phone_verified", "email_verified", "answer_verified",
                 "decision", "decided_at")
"""The case data an export may show: the user's own input, and what staff decided."""
PHOTOS = "photo_"


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
