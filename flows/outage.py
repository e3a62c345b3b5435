"""Telling the operator that the database fails: one line when it starts failing, one when it is back.

Every writer of a process (the event writer, the delivery recorders, the timer loop) reports to one `Outage`,
so a full disk or a lock held by another process costs two log lines, not a traceback per event and retry.
"""

from __future__ import annotations

import logging
import time

from flows.ports import StoreUnavailable

log = logging.getLogger("flows.database")


class Outage:
    def __init__(self) -> None:
        self.since: float | None = None
        self.failures = 0

    @property
    def ongoing(self) -> bool:
        return self.since is not None

    def failed(self, error: StoreUnavailable) -> None:
        """A transaction failed because the database did (the first failure of an outage is logged)."""
        self.failures += 1
        if self.since is not None:
            log.debug("the database is still unavailable (%s)", error)
            return
        self.since = time.monotonic()
        log.warning("the database is unavailable (%s): nothing more is committed until it is back; updates are "
                    "not confirmed, so Telegram sends them again, and replies wait in the outbox", error)

    def ended(self) -> None:
        """A transaction committed: if the database had been failing, say that it is back."""
        if self.since is None:
            return
        log.warning("the database is available again after %.0f s (%d failed transactions); carrying on",
                    time.monotonic() - self.since, self.failures)
        self.since, self.failures = None, 0
