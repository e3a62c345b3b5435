"""Delivery leases: which instance delivers a chat's replies while several instances share one database.

A chat's replies must leave once and in commit order. One instance at a time delivering a chat gives both: it
holds the chat's lease (a row per lane and chat, with an expiry) while it has replies for the chat. A reply
committed while another live instance holds its chat's lease is left to that instance, which looks for such
replies before it lets the lease go. Write transactions never interleave (flows/ports.py), so a reply committed
before that look is found by it, and one committed after finds the lease free and is taken by its own instance.
A lease that expires (its instance died, or lost the database) is taken over, with the chat's undelivered
replies, by the first instance to sweep; the one reply whose send was in flight at the kill may go twice.

Answers to button presses belong to no order (flows/runner.py, `_hold_answers`): the instance that committed
one sends it, often in its webhook response; a sweep takes only answers old enough that their instance gave up.

The same rows, in other lanes, keep a broadcast with the instance sending it (flows/broadcast.py) and a queued
account change or event with the instance posting it (`claim_rows`). Used only for a store that is `shared`
(PostgreSQL); a single instance needs none of this.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import datetime, timedelta

from flows.clock import Clock
from flows.ports import Store, Tx
from flows.records import Pending
from flows.replies import AnswerButton, Reply

log = logging.getLogger(__name__)

LEASE = timedelta(seconds=60)
RENEW_EVERY = 15.0  # seconds; a lease not renewed for LEASE - RENEW_EVERY is no longer used to send
SWEEP_EVERY = 5.0  # seconds between looks for chats whose replies nobody delivers
SWEEP_LIMIT = 1_000  # chats looked at per sweep; the next sweep goes on after the last of them
ORPHANED_ANSWER = timedelta(seconds=60)
FLUSH_WAIT = 5.0  # seconds a turn waits for results to be recorded before giving chats up (else: next turn)


class ChatLeases:
    """The chats one lane of this instance delivers: it takes their leases, renews them, gives them up, and
    sweeps up the chats nobody delivers. `deliver` queues entries on the lane; `flushed` waits until every
    result the lane has so far is recorded."""

    def __init__(self, lane: str, store: Store, clock: Clock, carries: Callable[[Reply], bool],
                 deliver: Callable[[Sequence[Pending]], None], flushed: Callable[[], Awaitable[None]]) -> None:
        self.lane = lane
        self.owner = uuid.uuid4().hex
        self.store = store
        self.clock = clock
        self._carries = carries
        self._deliver = deliver
        self._flushed = flushed
        self._claims: list[Pending] = []
        self._drained: set[int] = set()
        self._held: set[int] = set()
        self._wake = asyncio.Event()
        self._quiet = asyncio.Event()
        self._quiet.set()
        self._renewed_at: float | None = None
        self._swept_at = -math.inf
        self._swept_after: int | None = None  # the sweep's place among the chats
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._quiet.clear()  # until the first sweep has taken what nobody delivers
        self.task = asyncio.create_task(self._run(), name=f"leases-{self.lane}")

    def claim(self, entries: Sequence[Pending]) -> None:
        """Committed entries: answers go at once; the rest once their chat's lease is ours (else its holder
        finds them)."""
        self._deliver([e for e in entries if isinstance(e.reply, AnswerButton)])
        rest = [e for e in entries if not isinstance(e.reply, AnswerButton)]
        if rest:
            self._claims.extend(rest)
            self._quiet.clear()
            self._wake.set()

    def drained(self, chat_id: int) -> None:
        """The lane has nothing left for this chat: give up its lease, unless more waits for it."""
        if chat_id in self._held:
            self._drained.add(chat_id)
            self._quiet.clear()
            self._wake.set()

    def live(self) -> bool:
        """Whether our leases are surely still ours: renewed recently enough that none can have expired."""
        if self._renewed_at is None:
            return False
        return asyncio.get_running_loop().time() - self._renewed_at < LEASE.total_seconds() - RENEW_EVERY

    def may_send(self, entry: Pending) -> bool:
        """Whether this lane may send the entry now: an answer always; else only while its chat's lease is surely
        ours (after a pause longer than the lease, another instance may have taken the chat over)."""
        return isinstance(entry.reply, AnswerButton) or (entry.chat_id in self._held and self.live())

    def holds(self, chat_id: int) -> bool:
        return chat_id in self._held

    async def settled(self) -> None:
        """Wait until the first sweep is done, every entry claimed so far is either queued on the lane or left
        to another instance, and every chat the lane ran out of is given up or refilled."""
        await self._quiet.wait()

    @property
    def quiet(self) -> bool:
        return self._quiet.is_set()

    async def stop(self) -> None:
        """Stop, and give up every lease: another instance takes over what is still undelivered."""
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
            self.task = None
        try:
            async with self.store.transaction() as tx:
                await tx.leases.release(self.lane, self.owner)
        except Exception:  # they expire by themselves
            log.exception("%s: could not give up the delivery leases", self.lane)
        self._held.clear()

    async def _run(self) -> None:
        failures = 0
        while True:
            self._wake.clear()
            try:
                await self._turn()
            except Exception:
                failures += 1
                log.exception("%s: delivery leases could not be updated; retrying", self.lane)
                await asyncio.sleep(min(30.0, float(failures)))
                continue
            failures = 0
            if not self._claims and not self._drained:
                self._quiet.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), SWEEP_EVERY)

    async def _turn(self) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        sweep = started - self._swept_at >= SWEEP_EVERY
        renew = self._renewed_at is None or started - self._renewed_at >= RENEW_EVERY
        claims, self._claims = self._claims, []
        drained, self._drained = self._drained, set()
        if not (claims or drained or sweep or renew):
            return
        try:
            if drained and not await self._all_recorded():
                self._drained |= drained  # the next turn tries again; renewing and taking go on meanwhile
                drained = set()
            found, taken, released, lost = await self._update(claims, drained, sweep, renew)
        except BaseException:
            self._claims[:0] = claims
            self._drained |= drained
            raise
        if renew:
            self._renewed_at = started
        if sweep:
            self._swept_at = started
        if lost:
            log.warning("%s: %d chats were taken over by another instance while this one's leases lapsed",
                        self.lane, len(lost))
        self._held = (self._held - released - lost) | taken
        if found:
            self._deliver(sorted(found, key=lambda entry: entry.id))

    async def _all_recorded(self) -> bool:
        """Wait (a little) until every result so far is recorded: then what is still undelivered is not in
        flight."""
        try:
            await asyncio.wait_for(self._flushed(), FLUSH_WAIT)
        except TimeoutError:
            return False
        return True

    async def _update(
        self, claims: list[Pending], drained: set[int], sweep: bool, renew: bool
    ) -> tuple[list[Pending], set[int], set[int], set[int]]:
        """One transaction: renew, give up drained chats with nothing left, take free chats. Returns the entries
        to deliver, the chats taken, the chats given up and the chats lost (another instance holds them now)."""
        async with self.store.transaction() as tx:
            now = self.clock.now()
            found: list[Pending] = []
            released: set[int] = set()
            lost: set[int] = set()
            if renew:  # due at least every RENEW_EVERY, so a lease can have lapsed only when renewing is due
                lost = self._held - await tx.leases.renew(self.lane, self.owner, now + LEASE)
                drained = drained - lost
            if drained:
                left = [e for e in await tx.outbox.pending(chat_ids=drained) if self._ours(e, now)]
                released = drained - {e.chat_id for e in left}
                await tx.leases.release(self.lane, self.owner, released)
                found += left
            wanted = {e.chat_id for e in claims}
            if sweep:
                swept = await tx.leases.unleased(self.lane, now, SWEEP_LIMIT, self._swept_after)
                self._swept_after = swept[-1] if len(swept) == SWEEP_LIMIT else None
                wanted |= set(swept)
            owners = await tx.leases.owners(self.lane, wanted, now)
            free = wanted - owners.keys()
            ours = free | {chat_id for chat_id, owner in owners.items() if owner == self.owner}
            # All that waits for these chats, not only the claimed: what another instance committed for a chat
            # of ours goes first, in commit order (ids grow in commit order: writes never interleave).
            waiting = [e for e in await tx.outbox.pending(chat_ids=ours) if self._ours(e, now)] if ours else []
            taken = {e.chat_id for e in waiting} & free
            await tx.leases.hold(self.lane, taken, self.owner, now + LEASE)
        found += waiting
        return found, taken, released, lost

    def _ours(self, entry: Pending, now: datetime) -> bool:
        """An undelivered entry this lane would send: of its kind, and not an answer its own instance may still
        be sending."""
        if not self._carries(entry.reply):
            return False
        if isinstance(entry.reply, AnswerButton):
            return entry.queued_at is not None and now - entry.queued_at > ORPHANED_ANSWER
        return True


async def claim_rows(tx: Tx, lane: str, row_ids: Iterable[int], owner: str, now: datetime) -> set[int]:
    """Of these rows (a worker's due changes or events, running broadcasts), those no other live instance has
    claimed, now claimed by `owner` for a `LEASE` (in the caller's write transaction), so two live instances never
    send the same one; a dead instance's claims expire. The caller gives a claim up once the row is done with or
    put off, or renews it while it works on it."""
    wanted = set(row_ids)
    owners = await tx.leases.owners(lane, wanted, now)
    mine = {row_id for row_id in wanted if owners.get(row_id, owner) == owner}
    await tx.leases.hold(lane, mine, owner, now + LEASE)
    return mine
