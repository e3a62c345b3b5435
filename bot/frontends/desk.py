"""The Telegram side of the desk: one entry point for every update, whichever framework parsed it."""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from bot.frontends.updates import MembershipChanged, translate_update
from flows.delivery import Delivered
from flows.events import ButtonPressed, Event
from flows.inbound import InboundLimiter, Verdict
from flows.ports import Store, StoreUnavailable
from flows.records import Pending
from flows.replies import AnswerButton, Reply, SendMessage
from flows.runner import Runner
from flows.texts import translate

log = logging.getLogger(__name__)

Notice = SendMessage | AnswerButton
NOTICES_IN_FLIGHT = 5  # many flooders at once must not spend the bot's send allowance on notices


class AnswerHold:
    """Where a webhook receiver takes the committed answer to its update's button press, held back from the
    outbox so that it goes in the webhook response; `entry` stays None when there is none."""

    def __init__(self) -> None:
        self.entry: Pending | None = None


answer_hold: contextvars.ContextVar[AnswerHold | None] = contextvars.ContextVar("answer_hold", default=None)
"""Set by the webhook around one update; the framework in between runs `handle` within that context."""


class TelegramDesk:
    """Hands updates to the runner; `handle` returns once the update's effects are committed.

    Update ids whose handling failed are kept in `failed`, so a poller can leave them unconfirmed and get them
    again, whatever the framework in between did with the exception. A failing database raises nothing to the
    framework: the runner's outage log already said it, once.

    Each user's messages and button presses pass the inbound `limiter` first: the excess is dropped and counts
    as handled (the poller confirms it, the webhook answers 200), so a flooding user cannot fill the writer queue
    that every chat shares. The blocked flag of a block/unblock update is always set (dropping one would leave
    it wrong, and it bypasses the writer queue); what an unblock then tells the user passes the limit.
    """

    def __init__(self, runner: Runner, store: Store, limiter: InboundLimiter | None = None) -> None:
        self.runner = runner
        self.store = store
        self.limiter = limiter or InboundLimiter(runner.clock)
        self.failed: set[int] = set()
        self._notices: set[asyncio.Task[None]] = set()

    async def handle(self, update: Any) -> None:
        try:
            translated = translate_update(update)
            if isinstance(translated, MembershipChanged):
                await self._membership(translated)
            elif translated is not None and self._admitted(translated):
                hold = answer_hold.get()
                if hold is None or hold.entry is not None or not isinstance(translated, ButtonPressed):
                    await self.runner.handle(translated)
                else:
                    hold.entry = await self.runner.handle(translated, hold_answer=True)
        except StoreUnavailable:  # the runner logged it; the framework need not log a traceback too
            self.failed.add(update.update_id)
        except Exception:
            self.failed.add(update.update_id)
            raise

    def _admitted(self, event: Event) -> bool:
        verdict = self.limiter.check(event.sender.user_id)
        if verdict is Verdict.DROP_AND_WARN:
            log.info("user %d is over the inbound limit; dropping their updates for now", event.sender.user_id)
            self._notify(_slow_down(event))
        return verdict.admitted

    def _notify(self, notice: Notice) -> None:
        """Send the slow-down notice straight through the transport, in the background, best effort.

        Not through the outbox: that would write to the database for every flood, the very thing the limit
        shields, and the notice is advice, not a reply anyone relies on — if it is lost to a crash, a 429 or a
        network fault, the user just sends again and is told again in the next window. In the background so
        that a slow Telegram never holds up the poller or the webhook's answer.
        """
        if len(self._notices) >= NOTICES_IN_FLIGHT:
            log.info("slow-down notice to chat %d skipped: %d already on their way", notice.chat_id,
                     len(self._notices))
            return
        task = asyncio.create_task(_deliver_quietly(self.runner.transport.deliver, notice))
        self._notices.add(task)
        task.add_done_callback(self._notices.discard)

    async def _membership(self, change: MembershipChanged) -> None:
        """Mark the chat blocked or not; a user who unblocks the bot is then told where their case stands."""
        async with self.store.transaction() as tx:
            await tx.users.set_blocked(change.chat_id, change.blocked)
        log.info("chat %d %s the bot", change.chat_id, "blocked" if change.blocked else "unblocked")
        if not change.blocked and self._admitted(change.returned):  # a block/unblock loop is a flood too
            await self.runner.handle(change.returned)


def _slow_down(event: Event) -> Notice:
    """The notice for the first dropped update of a flood: a press's own answer (it also stops the spinner on
    that button; later dropped presses stay unanswered, to spend no API call on a flood), else a message."""
    text = translate("inbound.slow_down", event.sender.language)
    if isinstance(event, ButtonPressed) and event.callback_id:
        return AnswerButton(event.sender.chat_id, event.callback_id, text)
    return SendMessage(event.sender.chat_id, text)


async def _deliver_quietly(deliver: Callable[[Reply], Awaitable[Delivered]], notice: Notice) -> None:
    try:
        await deliver(notice)
    except Exception as error:
        log.info("slow-down notice to chat %d not sent (%s)", notice.chat_id, type(error).__name__)


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
