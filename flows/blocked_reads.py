"""Whether chats blocked the bot, asked by many delivery workers at once and answered by one read for all.

The store stays the only source of the answer (a user who writes again is unblocked by their event, maybe in
another process), so nothing is cached: a question waits at most for the read in flight, then joins the next one.
"""

from __future__ import annotations

import asyncio

from flows.ports import Store


class BlockedReads:
    """Coalesces concurrent "did this chat block the bot?" questions into one reading transaction."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._asked: dict[int, list[asyncio.Future[bool]]] = {}
        self._reading: asyncio.Task[None] | None = None

    async def blocked(self, chat_id: int) -> bool:
        """Whether the store now records that this chat's user blocked the bot; raises if the read failed."""
        answer: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._asked.setdefault(chat_id, []).append(answer)
        if self._reading is None:
            self._reading = asyncio.create_task(self._read_all())
        return await answer

    async def stop(self) -> None:
        if self._reading is not None:
            self._reading.cancel()
            await asyncio.gather(self._reading, return_exceptions=True)

    async def _read_all(self) -> None:
        try:
            while self._asked:
                await asyncio.sleep(0)  # let the other workers of this turn ask first
                asked, self._asked = self._asked, {}
                await self._answer(asked)
        finally:
            self._reading = None

    async def _answer(self, asked: dict[int, list[asyncio.Future[bool]]]) -> None:
        try:
            async with self.store.reading() as tx:
                blocked = await tx.users.blocked_among(asked)
        except Exception as error:
            for answers in asked.values():
                for answer in answers:
                    if not answer.done():
                        answer.set_exception(error)
            return
        for chat_id, answers in asked.items():
            for answer in answers:
                if not answer.done():
                    answer.set_result(chat_id in blocked)
