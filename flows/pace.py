"""A pace: start slots at a steady rate, by the clock, that pauses when told to (Telegram's 429); and a spacing
that keeps the sends themselves at least 1/rate apart, whatever happened between a slot and its send."""

from __future__ import annotations

import math
from datetime import datetime, timedelta

from flows.clock import Clock

MAX_LAG = 1.0
"""How far (seconds) the pace may fall behind its schedule and still catch up; beyond, the schedule restarts."""


class Pace:
    """Start slots at t0 + i/rate. A pause moves t0 to its end; a backlog beyond `MAX_LAG` restarts the schedule
    instead of being caught up in a burst."""

    def __init__(self, clock: Clock, rate: float) -> None:
        self.clock = clock
        self.rate = rate
        self._t0: datetime | None = None
        self._next = 0

    def _due(self) -> datetime | None:
        return None if self._t0 is None else self._t0 + timedelta(seconds=self._next / self.rate)

    def claim(self) -> float:
        """Seconds until the next slot; 0.0 means the slot was free and is now taken."""
        now = self.clock.now()
        due = self._due()
        if due is None or due < now - timedelta(seconds=MAX_LAG):
            self._t0, self._next, due = now, 0, now
        if due > now:
            return (due - now).total_seconds()
        self._next += 1
        return 0.0

    def pause(self, seconds: float) -> None:
        """No slot before `seconds` from now."""
        until = self.clock.now() + timedelta(seconds=seconds)
        due = self._due()
        if due is None or due < until:
            self._t0, self._next = until, 0


class Spacing:
    """Sends at least 1/rate apart, by the clock, so that no second holds more than `rate` of them.

    The pace's slots are kept on average, but between a slot and its send lie a commit and a task start, whose
    times vary: two sends could come closer than their slots. This is asked right before each send.
    """

    def __init__(self, clock: Clock, rate: float) -> None:
        self.clock = clock
        # rounded up to the clock's microsecond, so rounding never lets a (rate + 1)-th send into one second
        self.gap = timedelta(microseconds=math.ceil(1_000_000 / rate))
        self._last: datetime | None = None

    def claim(self) -> float:
        """Seconds to wait before sending; 0.0 means send now (the send is counted from now)."""
        now = self.clock.now()
        if self._last is not None and now < self._last + self.gap:
            return (self._last + self.gap - now).total_seconds()
        self._last = now
        return 0.0
