"""/language: a user picks the language the desk writes to them in (else their Telegram app's is used)."""

from __future__ import annotations

import re

from flows.events import ButtonPressed
from flows.methods.common import services
from flows.model import Context, Letter, Outcome, Say
from flows.texts import DEFAULT_LANGUAGE, languages, text

LANGUAGE_DATA = re.compile(r"^l:([a-z]{2,3})$")


def offered() -> list[str]:
    """The languages with a catalog, English first."""
    return sorted(languages(), key=lambda code: (code != DEFAULT_LANGUAGE, code))


async def language_command(ctx: Context) -> Outcome:
    buttons = tuple(((f"language.name_{code}", f"l:{code}"),) for code in offered())
    return Say(letters=(Letter((ctx.event.sender.chat_id,), text("language.choose"), buttons),))


async def language_button(ctx: Context) -> Outcome:
    """Store the choice, and say so in the language chosen."""
    event = ctx.event
    match = LANGUAGE_DATA.match(event.data) if isinstance(event, ButtonPressed) else None
    if match is None or match.group(1) not in languages():
        return Say(say=(text("engine.button_expired"),))
    chosen = match.group(1)
    await services(ctx).tx.users.choose_language(event.sender.user_id, chosen)
    return Say(say=(text("language.chosen"),), language=chosen)
