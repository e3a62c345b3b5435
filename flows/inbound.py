"""A per-user inbound limit: the shield that keeps one flooding user from filling the single writer queue.

Each Telegram user may send `limit` events in any `window` (a sliding window); what comes beyond is dropped
before it reaches the runner or the database, and the user is told once per flood window to slow down.

It lives in memory, per process, on purpose: it guards the database, so keeping its counts in the database would
defeat it, and losing them on a restart is harmless (a flooder gets one fresh window). Memory stays bounded:
a user silent for a whole window is forgotten.
"""

from __future__ import annotations

import enum
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from flows.clock import Clock

DEFAULT_LIMIT = 20
DEFAULT_WINDOW = timedelta(seconds=10)
# Staff work in bursts (a queue of review cards, a reason after each Reject), and a false "slow down" to the
# person approving recoveries costs more than to a user; but an admin account can be stolen or scripted too,
# so staff get a higher limit, not none.
STAFF_FACTOR = 2


class Verdict(enum.Enum):
    ADMIT = "admit"
    DROP = "drop"
    DROP_AND_WARN = "drop and warn"  # the first drop of a flood window: tell the user to slow down

    @property
    def admitted(self) -> bool:
        return self is Verdict.ADMIT


@dataclass
class _Sender:
    admitted: deque[datetime]
    last_seen: datetime
    warned_until: datetime | None = field(default=None)


class InboundLimiter:
    """`check(user_id)` for every inbound event of a user: admit it, or drop it (and warn once per window)."""

    def __init__(
        self,
        clock: Clock,
        limit: int = DEFAULT_LIMIT,
        window: timedelta = DEFAULT_WINDOW,
        is_staff: Callable[[int], bool] = lambda _user_id: False,
    ) -> None:
        if limit < 1 or window <= timedelta(0):
            raise ValueError("the inbound limit needs at least one event in a positive window")
        self.clock = clock
        self.limit = limit
        self.window = window
        self.is_staff = is_staff
        self._senders: OrderedDict[int, _Sender] = OrderedDict()  # least recently seen first

    def check(self, user_id: int) -> Verdict:
        now = self.clock.now()
        self._forget_idle(now)
        sender = self._sender(user_id, now)
        while sender.admitted and sender.admitted[0] <= now - self.window:
            sender.admitted.popleft()
        if len(sender.admitted) < self.limit_of(user_id):
            sender.admitted.append(now)
            return Verdict.ADMIT
        if sender.warned_until is not None and now < sender.warned_until:
            return Verdict.DROP
        sender.warned_until = now + self.window
        return Verdict.DROP_AND_WARN

    def limit_of(self, user_id: int) -> int:
        return self.limit * STAFF_FACTOR if self.is_staff(user_id) else self.limit

    @property
    def tracked(self) -> int:
        """How many users the limiter remembers right now."""
        return len(self._senders)

    def _sender(self, user_id: int, now: datetime) -> _Sender:
        sender = self._senders.get(user_id)
        if sender is None:
            sender = self._senders[user_id] = _Sender(deque(), now)
        else:
            self._senders.move_to_end(user_id)
            sender.last_seen = now
        return sender

    def _forget_idle(self, now: datetime) -> None:
        """Drop users not seen for a window: their admitted events and their warning have all expired."""
        while self._senders:
            user_id, oldest = next(iter(self._senders.items()))
            if oldest.last_seen > now - self.window:
                return
            del self._senders[user_id]
