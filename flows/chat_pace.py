"""Telegram's limit in one chat: about one message a second sustained, with short bursts allowed.

A token bucket per chat: a chat may take `burst` messages at once, then one every `1 / per_second` seconds.
Edits, deletions and button answers are not messages and take nothing. Chats whose bucket is full again are
forgotten, so memory follows the chats active in the last `burst / per_second` seconds.
"""

from __future__ import annotations

import time
from collections.abc import Callable

BURST = 10
PER_SECOND = 1.0
FORGET_EVERY = 1_000  # buckets checked for forgetting after this many new ones


class ChatPace:
    def __init__(self, burst: int = BURST, per_second: float = PER_SECOND,
                 now: Callable[[], float] = time.monotonic) -> None:
        self.burst = burst
        self.per_second = per_second
        self._now = now
        self._buckets: dict[int, tuple[float, float]] = {}  # chat id -> (tokens, when counted)
        self._added = 0

    def wait(self, chat_id: int) -> float:
        """Seconds until `chat_id` may take a message; 0.0 means it took one now."""
        now = self._now()
        tokens = self._tokens(chat_id, now)
        if tokens >= 1.0:
            self._keep(chat_id, tokens - 1.0, now)
            return 0.0
        return (1.0 - tokens) / self.per_second

    def _tokens(self, chat_id: int, now: float) -> float:
        counted = self._buckets.get(chat_id)
        if counted is None:
            return float(self.burst)
        tokens, when = counted
        return min(float(self.burst), tokens + (now - when) * self.per_second)

    def _keep(self, chat_id: int, tokens: float, now: float) -> None:
        if chat_id not in self._buckets:
            self._added += 1
            if self._added % FORGET_EVERY == 0:
                self._forget_full(now)
        self._buckets[chat_id] = (tokens, now)

    def _forget_full(self, now: float) -> None:
        full = [chat for chat in self._buckets if self._tokens(chat, now) >= self.burst]
        for chat in full:
            del self._buckets[chat]

    def __len__(self) -> int:
        return len(self._buckets)
