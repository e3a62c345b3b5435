"""SIGKILL at random points of a busy run, and a restart each time: nothing is lost and nothing is done twice.

The real `recovery-bot run` process (long polling, SQLite) serves a scripted workload while the test kills it
with SIGKILL `KILLS` times, each after a random 0.2-1.5 s of activity (a third of them just as a send reaches
the server, so that its result is not yet recorded), and starts it again at once. Users walk each of the three
methods (Method 1 to phone verification, Method 2 to staff review, Method 3 with the backup key), staff approve
one Method 2 case and its user sets up the new authenticator key, code-expiry timers fall due, and an admin
broadcasts to everyone: some 200 users who sent /start first, and the rest. Each user starts at a kill chosen by
the seeded `random.Random(SEED)`, so kills land during the methods' steps, while replies are in flight and during
the broadcast.

At the end, from the test server's record of calls and from the database: every update handed out was acted on
once; no reply is left undelivered in the outbox; no timer fired twice, and each one due has fired; each
recipient the broadcast recorded as sent got one copy, and none got two (a send in flight at a kill is recorded
as uncertain and not sent again); every user saw their method's last message; and a chat got a message twice in
a row only around a kill, at most once per chat per kill: the send that was in flight (README, "After a crash").
The summary line (seed, kills, updates, repeats, broadcast) is printed even when the test passes.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import os
import random
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from flows.store import tables
from flows.store.database import open_database
from tests.support.botapi import BotApiServer, Call
from tests.support.desk import totp_now
from tests.support.e2e import (
    ADMIN,
    SILENT_ADMIN,
    BotProcess,
    TgUser,
    greet,
    make_timers_due,
    prepare_database,
    processed_count,
    submit_ben_with_a_selfie,
    walk_backup_key_to_the_code,
    walk_method_two_to_review,
    walk_phone_switch_to_the_codes,
)

SEED = int(os.environ.get("CRASH_TEST_SEED", "14"))  # fixed; set the variable to replay another run
KILLS = 25
ALIVE_BEFORE_KILL = (0.2, 1.5)  # seconds of activity after a restart before the next SIGKILL
AT_A_SEND = 1 / 3  # the share of kills made just as a send reaches the server
PATIENCE = 90.0  # a user waits this long for an answer: restarts on a loaded machine, and the backlog after them

AUDIENCE = range(5001, 5201)  # users who only sent /start, for the broadcast
PHONE_USERS = range(301, 306)  # Method 1 to the end
BACKUP_USERS = range(311, 316)  # Method 3 to the end
REVIEW_USERS = range(321, 323)  # Method 2 with documents, to staff review
APPROVED_USER = 331  # Method 2 with a selfie, approved by staff, then the new key set up
EXPIRY_USERS = range(341, 344)  # Method 1 to the SMS code, then the codes expire
BROADCAST_CONCURRENCY = 5  # sends a broadcast has in flight at most (flows/broadcast.py)
BROADCAST = "Scheduled maintenance tonight: the desk stays open."
FINAL = {
    **dict.fromkeys(PHONE_USERS, "Your account now uses phone verification"),
    **dict.fromkeys(BACKUP_USERS, "The code matches"),
    **dict.fromkeys(REVIEW_USERS, "Your request is now with our staff"),
    APPROVED_USER: "Your new authenticator works.",
    **dict.fromkeys(EXPIRY_USERS, "Your code has expired."),
}
SENDS = frozenset({"sendMessage", "sendPhoto", "sendDocument", "sendMediaGroup", "copyMessage"})


def email_of(user_id: int) -> str:
    return f"user{user_id}@example.com"


def accounts_csv() -> str:
    """One account per user who walks a method (an authenticator code is accepted once per account), like Ada's
    (a security question, not verified) for the review walks and like Ben's (verified) for the rest."""
    rows = ["email,phone,totp_secret,security_question,security_answer,identity_verified"]
    for user_id in itertools.chain(PHONE_USERS, BACKUP_USERS, REVIEW_USERS, [APPROVED_USER]):
        like_ada = user_id in REVIEW_USERS
        question = "What was your first pet's name?,Rex" if like_ada else ","
        verified = str(not like_ada).lower()
        rows.append(f"{email_of(user_id)},+1555{user_id:07d},{secret_of(user_id)},{question},{verified}")
    return "\n".join(rows) + "\n"


def secret_of(user_id: int) -> str:
    return base64.b32encode(f"authenticator-{user_id:06d}".encode()[:20]).decode()


@dataclass
class Kill:
    number: int
    at_a_send: bool
    broadcasting: bool
    walking: int  # users in the middle of their method
    restart: int = 0  # the index in the server's calls of the next process's first call: all before are older


@dataclass
class Run:
    """The bot process, killed and restarted by `kill_repeatedly` while the users' scripts play."""

    bot: BotProcess
    server: BotApiServer
    rng: random.Random
    kills: list[Kill] = field(default_factory=list)
    walking: set[int] = field(default_factory=set)
    broadcasting: bool = False
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def after_kill(self, number: int) -> None:
        """Wait until the bot has been killed `number` times (and is starting again)."""
        async with self.changed:
            await self.changed.wait_for(lambda: len(self.kills) >= number)

    async def kill_repeatedly(self) -> None:
        for number in range(1, KILLS + 1):
            await asyncio.sleep(self.rng.uniform(*ALIVE_BEFORE_KILL))
            at_a_send = self.rng.random() < AT_A_SEND
            if at_a_send:
                try:
                    await self.server.wait_for(lambda c: c.method in SENDS, timeout=2, since=len(self.server.calls),
                                               finished=False)
                except TimeoutError:
                    at_a_send = False
            kill = Kill(number, at_a_send, self.broadcasting, len(self.walking))
            await self.bot.kill()  # the signal goes before this task lets anything else run
            killed_at = len(self.server.calls)
            async with self.changed:
                self.kills.append(kill)
                self.changed.notify_all()
            # Telegram hands out again whatever is unconfirmed; as if the confirmation of the last batch had been
            # lost in the crash too, that batch comes again as well (most of it was committed)
            for update in self.last_batch():
                self.server.enqueue(update)
            await self.bot.start()
            # a request the dead process had sent may still be read after the kill; the new one starts with getMe
            kill.restart = next(n for n in range(killed_at, len(self.server.calls))
                                if self.server.calls[n].method == "getMe")

    def last_batch(self) -> list[dict[str, Any]]:
        """The updates of the last poll that brought any."""
        for call in reversed(self.server.calls):
            if call.method == "getUpdates" and call.ok and call.result:
                return list(call.result)
        return []

    async def walk(self, user: TgUser, start_after: int, script: Callable[[], Awaitable[None]]) -> None:
        await self.after_kill(start_after)
        self.walking.add(user.user_id)
        try:
            await script()
        except Exception as error:
            stuck = f"user {user.user_id} (started after kill {start_after}) is stuck"
            raise AssertionError(f"{stuck}: {str(error)[:300]}") from error
        finally:
            self.walking.discard(user.user_id)


async def method_one(user: TgUser) -> None:
    await walk_phone_switch_to_the_codes(user, email_of(user.user_id))
    user.send(user.last_code("SMS"))
    await user.expect("Now send me the 6-digit code from the email")
    user.send(user.last_code("Email"))
    await user.expect("Press Submit")
    user.tap("Submit")
    await user.expect("Your account now uses phone verification")


async def method_three(user: TgUser) -> None:
    await walk_backup_key_to_the_code(user, email_of(user.user_id))
    user.send(totp_now(secret_of(user.user_id), datetime.now(UTC)))
    await user.expect("The code matches")


async def method_two_to_review(user: TgUser) -> None:
    await walk_method_two_to_review(user, email_of(user.user_id))


async def approved_and_new_key(admin: TgUser, user: TgUser) -> None:
    email = email_of(user.user_id)
    await submit_ben_with_a_selfie(admin, user, email)
    await admin.expect(email)  # this case's card (other cases' cards come to the same chat)
    card = next(m for m in reversed(admin.server.chat_messages(ADMIN)) if email in m.text and m.keyboard)
    admin.press(card.message_id, card.button("✅ Approve")["callback_data"])
    await admin.expect("approved, withdrawals locked")
    key_text = await user.expect("Or type this key")
    secret = key_text.split("Or type this key: ", 1)[1].split("\n", 1)[0].replace(" ", "")
    user.send(totp_now(secret, datetime.now(UTC)))
    await user.expect("Your new authenticator works.")


async def codes_expire(run: Run, user: TgUser, due_after: int) -> None:
    """To the SMS code with an address that has no account, then (after kill `due_after`) the codes expire."""
    await walk_phone_switch_to_the_codes(user, f"user{user.user_id}@example.org")
    await run.after_kill(due_after)
    user.mark = len(user.server.calls)
    assert await make_timers_due(run.bot.database_url, "codes_expired", [user.user_id]) == 1
    await user.expect("Your code has expired.")


async def until(condition: Callable[[], bool], timeout: float, what: str) -> None:  # noqa: ASYNC109
    """Poll for a condition that would cost a scan of every call per change with `wait_for`."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"not within {timeout} s: {what}")
        await asyncio.sleep(0.25)


def greeted(server: BotApiServer, chats: set[int]) -> bool:
    seen = {c.params.get("chat_id") for c in server.calls if c.method == "sendMessage" and c.ok and
            "Welcome" in str(c.result.get("text"))}
    return chats <= {int(chat) for chat in seen if chat is not None}


async def broadcast(run: Run, admin: TgUser, start_after: int) -> None:
    await greet(admin)
    await run.after_kill(start_after)
    await until(lambda: greeted(run.server, set(AUDIENCE)), PATIENCE, "every /start of the audience answered")
    admin.send(f"/broadcast {BROADCAST}")
    await admin.expect("preview")
    admin.tap("📣 Send")
    run.broadcasting = True
    await admin.expect("is starting")
    said = len(admin.sent_texts())
    await until(lambda: any("finished." in text for text in admin.sent_texts()[said:]), PATIENCE * 2,
                "the broadcast's report")
    run.broadcasting = False


def sends_by_chat(server: BotApiServer) -> dict[int, list[tuple[int, Call]]]:
    """Each chat's sends that went through, with their places among the server's calls."""
    chats: dict[int, list[tuple[int, Call]]] = defaultdict(list)
    for n, call in enumerate(server.calls):
        if call.method in SENDS and call.ok:
            chats[int(call.params["chat_id"])].append((n, call))
    return chats


def content(call: Call) -> str:
    params = {k: v for k, v in call.params.items() if k in ("text", "caption", "photo", "document", "media",
                                                            "from_chat_id", "message_id")}
    return f"{call.method} {json.dumps(params, sort_keys=True, default=str)}"


def is_broadcast(call: Call) -> bool:
    return call.params.get("text") == BROADCAST


def repeats(server: BotApiServer, kills: list[Kill]) -> tuple[Counter[tuple[int, int]], list[str]]:
    """Sends to one chat of the same content twice in a row (the broadcast, on a lane of its own, left out): per
    (chat, kill) when the first came from a process killed before the second's, and the rest, which no kill
    explains."""
    around: Counter[tuple[int, int]] = Counter()
    unexplained = []
    for chat, sends in sends_by_chat(server).items():
        lane = [(n, call) for n, call in sends if not is_broadcast(call)]
        for (first, before), (second, after) in itertools.pairwise(lane):
            if content(before) != content(after):
                continue
            kill = next((k for k in kills if first < k.restart <= second), None)
            if kill is None:
                unexplained.append(f"chat {chat}, calls {first} and {second}: {content(after)[:120]}")
            else:
                around[chat, kill.number] += 1
    return around, unexplained


async def rows(database_url: str, table: Any) -> list[Any]:
    engine = open_database(database_url)
    try:
        async with engine.connect() as conn:
            return list(await conn.execute(select(table)))
    finally:
        await engine.dispose()


async def processed_keys(database_url: str, prefix: str) -> set[str]:
    return {str(row.key) for row in await rows(database_url, tables.processed) if str(row.key).startswith(prefix)}


def aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def collapsed(texts: list[str]) -> list[str]:
    return [t for n, t in enumerate(texts) if n == 0 or texts[n - 1] != t]


async def settled(database_url: str) -> None:
    """Wait until the outbox has nothing left to send."""
    async def pending() -> int:
        return sum(1 for row in await rows(database_url, tables.outbox) if row.delivered_at is None)
    for _ in range(60):
        if not await pending():
            break
        await asyncio.sleep(0.5)
    await asyncio.sleep(1)  # anything sent twice would show by now


async def test_sigkill_at_random_points_loses_nothing_and_repeats_nothing(
    server: BotApiServer, framework: str, tmp_path: Path, record_property: Callable[[str, object], None],
    capsys: pytest.CaptureFixture[str],
) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    rng = random.Random(SEED)
    bot = BotProcess(server, framework, tmp_path)
    await prepare_database(bot.database_url, accounts_csv())
    await bot.start()
    run = Run(bot, server, rng)

    def user(user_id: int) -> TgUser:
        return TgUser(server, user_id, patience=PATIENCE)

    reviewer, announcer = user(ADMIN), user(SILENT_ADMIN)
    walkers = {uid: user(uid) for uid in [*PHONE_USERS, *BACKUP_USERS, *REVIEW_USERS, APPROVED_USER, *EXPIRY_USERS]}
    first_walks = KILLS * 4 // 5  # the last users start early enough to meet a few kills on the way
    scripts = [
        *(run.walk(walkers[uid], rng.randrange(first_walks), partial(method_one, walkers[uid])) for uid in PHONE_USERS),
        *(run.walk(walkers[uid], rng.randrange(first_walks), partial(method_three, walkers[uid]))
          for uid in BACKUP_USERS),
        *(run.walk(walkers[uid], rng.randrange(KILLS // 2), partial(method_two_to_review, walkers[uid]))
          for uid in REVIEW_USERS),
        run.walk(walkers[APPROVED_USER], rng.randrange(KILLS // 4),
                 partial(approved_and_new_key, reviewer, walkers[APPROVED_USER])),
        *(run.walk(walkers[uid], rng.randrange(KILLS // 4),
                   partial(codes_expire, run, walkers[uid], rng.randrange(KILLS // 4, first_walks)))
          for uid in EXPIRY_USERS),
        broadcast(run, announcer, rng.randrange(KILLS // 5, KILLS // 3)),
    ]
    for audience_user in AUDIENCE:
        server.user_sends_text(audience_user, "/start", language_code="en")
    killing = asyncio.create_task(run.kill_repeatedly())
    try:
        await asyncio.gather(*scripts, killing)
        await settled(bot.database_url)
        stopped = datetime.now(UTC)
        assert await bot.stop() == 0, bot.log.read_text()[-3000:]
    finally:
        killing.cancel()
        if bot.process is not None:
            await bot.kill()

    handed_out = {u["update_id"] for c in server.calls_of("getUpdates") if c.ok for u in c.result}
    presses = {str(u["callback_query"]["id"]) for c in server.calls_of("getUpdates") if c.ok for u in c.result
               if "callback_query" in u}
    answers = Counter(str(c.params["callback_query_id"]) for c in server.calls_of("answerCallbackQuery") if c.ok)
    around, unexplained = repeats(server, run.kills)
    outbox = await rows(bot.database_url, tables.outbox)
    timers = await rows(bot.database_url, tables.timers)
    deliveries = await rows(bot.database_url, tables.broadcast_deliveries)
    audit = await rows(bot.database_url, tables.audit)
    copies = Counter(int(c.params["chat_id"]) for c in server.calls_of("sendMessage") if c.ok and is_broadcast(c))
    states = Counter(str(row.state) for row in deliveries)
    timer_keys = await processed_keys(bot.database_url, "timer:")
    summary = (
        f"crash test ({framework}): seed {SEED}, {len(run.kills)} kills ({sum(k.at_a_send for k in run.kills)} at a "
        f"send, {sum(k.broadcasting for k in run.kills)} during the broadcast, "
        f"{sum(k.walking > 0 for k in run.kills)} during a method), {len(handed_out)} updates, "
        f"{sum(around.values())} messages repeated around a kill in {len({chat for chat, _ in around})} chats, "
        f"broadcast: {len(deliveries)} recipients, {sum(copies.values())} copies, {dict(states)}; "
        f"{len(timer_keys)} timers fired; outbox {dict(Counter(str(row.outcome) for row in outbox))}; "
        f"{loop.time() - started:.0f} s"
    )
    record_property("crash_summary", summary)
    with capsys.disabled():
        print(f"\n{summary}")

    assert len(run.kills) == KILLS
    assert await processed_count(bot.database_url, sorted(handed_out)) == len(handed_out)  # each acted on
    assert all(row.delivered_at is not None for row in outbox), [r for r in outbox if r.delivered_at is None]
    assert set(answers) == presses and set(answers.values()) == {1}  # each press answered, once
    assert not unexplained, unexplained
    assert set(around.values()) <= {1}, around  # at most one message per chat per kill
    # A timer fires as an event under its key `timer:{id}`, so at most once; every one due by the stop is done
    # (fired, or closed unfired when a newer one of its kind replaced it), and each expiry fired for its chat
    fired = {row.id: row for row in timers if f"timer:{row.id}" in timer_keys}
    assert len(fired) == len(timer_keys) and all(row.fired_at is not None for row in fired.values())
    assert all(row.fired_at is not None for row in timers if aware(row.due_at) <= stopped), timers
    expired = Counter(int(row.chat_id) for row in fired.values() if row.kind == "codes_expired")
    assert expired == Counter(EXPIRY_USERS)
    # Every user saw their method's last message, once (a repeat around a kill is counted above)
    for uid, walker in walkers.items():
        said = collapsed(walker.sent_texts())
        assert sum(FINAL[uid] in text for text in said) == 1, (uid, said)
    # The broadcast: one copy to each recipient recorded as sent, none to anyone twice, no copy outside it
    recipients = {int(row.chat_id): str(row.state) for row in deliveries}
    assert set(AUDIENCE) <= set(recipients)
    assert all(copies[chat] == 1 for chat, state in recipients.items() if state == "sent"), copies
    assert all(count == 1 for count in copies.values()) and set(copies) <= set(recipients)
    assert states.keys() <= {"sent", "uncertain"}, states
    # only the sends a kill cut off are uncertain: at most as many as the broadcast sends at once, per kill
    assert sum(k.broadcasting for k in run.kills) >= 1
    assert states["uncertain"] <= BROADCAST_CONCURRENCY * sum(k.broadcasting for k in run.kills)
    # Each effect once: the switches to phone, the submissions, the approval
    effects = Counter((str(row.action), str(row.subject)) for row in audit)
    for action, expected in (("account.switched_to_phone", len(PHONE_USERS)),
                             ("case.submitted", len(REVIEW_USERS) + 1), ("review.approved", 1)):
        done = {subject: n for (act, subject), n in effects.items() if act == action}
        assert len(done) == expected and set(done.values()) == {1}, (action, done)
