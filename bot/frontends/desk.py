"""The Telegram side of the desk: one entry point for every update, whichever framework parsed it."""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from bot.frontends.updates import MembershipChanged, translate_update
from flows.runner import Runner
from flows.store import batch

log = logging.getLogger(__name__)


class TelegramDesk:
    """Hands updates to the runner; `handle` returns once the update's effects are committed.

    Update ids whose handling failed are kept in `failed`, so a poller can leave them unconfirmed and get them
    again, whatever the framework in between did with the exception.
    """

    def __init__(self, runner: Runner, db: AsyncEngine) -> None:
        self.runner = runner
        self.db = db
        self.failed: set[int] = set()

    async def handle(self, update: Any) -> None:
        try:
            translated = translate_update(update)
            if isinstance(translated, MembershipChanged):
                await self._membership(translated)
            elif translated is not None:
                await self.runner.handle(translated)
        except Exception:
            self.failed.add(update.update_id)
            raise

    async def _membership(self, change: MembershipChanged) -> None:
        async with self.db.begin() as conn:
            await batch.set_blocked(conn, change.chat_id, change.blocked)
        if change.blocked:
            self.runner.dispatcher.block(change.chat_id)
        else:
            self.runner.dispatcher.unblock(change.chat_id)
        log.info("chat %d %s the bot", change.chat_id, "blocked" if change.blocked else "unblocked")


def chat_of(update: Any) -> int:
    """The chat an update belongs to (its id if it has none), to keep one chat's updates in order."""
    for part in (update.message, update.callback_query, update.my_chat_member):
        if part is None:
            continue
        chat = getattr(part, "chat", None) or getattr(getattr(part, "message", None), "chat", None)
        if chat is not None:
            return int(chat.id)
        return int(part.from_user.id)
    return -int(update.update_id)
