"""Two real `recovery-bot run` processes in webhook mode on one PostgreSQL database, one of them killed mid-run.

The test is the load balancer: it posts each Telegram update to one instance picked at random (seeded), and
about one in five to both at the same moment, as a retrying Telegram or a confused balancer would. Ten users
walk Method 1 to the SMS code while an admin broadcasts to everyone; the instance that started the broadcast is
killed with SIGKILL while it sends, and everything after goes to the survivor, which takes over the dead
instance's chats and broadcast once their leases expire (60 s, flows/leases.py). The codes expire after
CODE_TTL_MINUTES=1, so the expiry timer fires while only the survivor lives.

Then every update was acted on once, every chat got each reply once and in commit order, the expiry timer spoke
once per chat and the broadcast reached each recipient at most once, each one it missed counted as uncertain in
its report. The one reply whose send was in flight at the kill may go twice (docs/deploy.md): such repeats are
counted, printed and allowed up to `MAX_IN_FLIGHT_REPEATS`.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import re
import signal
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import ClientError, ClientSession, ClientTimeout
from sqlalchemy import select

from flows.store import tables
from flows.store.database import open_database
from tests.support.botapi import SECRET_HEADER, BotApiServer, Call
from tests.support.e2e import ADMIN, TOKEN, BotProcess, TgUser, prepare_database, processed_count
from tests.support.servers import free_port

FRAMEWORK = "ptb"  # one framework is enough here: the guarantees under test live in flows/, not the front end
USERS = range(201, 211)
SEED = 13
BOTH_SHARE = 0.2  # the share of updates posted to both instances at once
BROADCAST = "Scheduled maintenance tonight: the desk stays open."
SENT_BEFORE_KILL = 3  # broadcast messages delivered before the instance sending it is killed
TAKEOVER_TIMEOUT = 100.0  # the lease (60 s) plus sweeps and a loaded machine
MAX_IN_FLIGHT_REPEATS = 3

# What each user's chat gets, in order (one sendMessage each); the broadcast comes on its own lane, in between.
WELCOME = "Welcome to the official Acme account recovery desk."
ASK_EMAIL = "Which email address"
PRESS_GET_CODE = "Press Get Code"
CODES_SENT = "If this email is on file with Acme, we have sent a 6-digit code"
ASK_SMS = "Send me the 6-digit code from the SMS"
WRONG = "That SMS code is not right."
EXPIRED = "Your code has expired."
HELP = "I help you get back into your Acme account"
SCRIPT = (WELCOME, ASK_EMAIL, PRESS_GET_CODE, CODES_SENT, ASK_SMS, WRONG, ASK_SMS, EXPIRED, ASK_SMS, HELP)
ADMIN_SCRIPT = ("Welcome", "— preview", "is starting", "finished.")  # the preview's progress shows by edits


@dataclass
class Instance:
    name: str
    process: BotProcess
    url: str


@dataclass
class Splitter:
    """Posts updates to the instances' webhooks as Telegram would, and does the method a 200 names."""

    server: BotApiServer
    alive: list[Instance]
    http: ClientSession
    rng: random.Random = field(default_factory=lambda: random.Random(SEED))
    routes: list[tuple[int, tuple[str, ...]]] = field(default_factory=list)
    retried: int = 0
    victim: Instance | None = None  # once set, the first update it alone confirms dooms it
    doomed: asyncio.Future[tuple[int, int]] | None = None  # that update's chat, and the calls before its post
    killed_at: float = 0.0  # the server's clock (time.time) at the SIGKILL

    @property
    def secret(self) -> str:
        assert self.server.webhook is not None and self.server.webhook.secret_token
        return self.server.webhook.secret_token

    def pick(self) -> list[Instance]:
        if len(self.alive) > 1 and self.rng.random() < BOTH_SHARE:
            return list(self.alive)
        return [self.rng.choice(self.alive)]

    async def post(self, update: dict[str, Any], to: Instance | None = None) -> None:
        targets = [to] if to is not None else self.pick()
        self.routes.append((update["update_id"], tuple(t.name for t in targets)))
        statuses = await asyncio.gather(*(self._post_one(t, update, alone=len(targets) == 1) for t in targets))
        if 200 not in statuses:  # Telegram tries again until an instance confirms it
            self.retried += 1
            assert await self._post_one(self.alive[0], update) == 200

    async def _post_one(self, instance: Instance, update: dict[str, Any], alone: bool = True) -> int:
        mark = len(self.server.calls)
        try:
            async with self.http.post(instance.url, json=update, headers={SECRET_HEADER: self.secret}) as response:
                status, body = response.status, await response.json(content_type=None)
        except (TimeoutError, ClientError):
            return 0  # the instance died under the request
        if status == 200 and alone and instance is self.victim and self.doomed and not self.doomed.done():
            self.doomed.set_result((update["message"]["chat"]["id"], mark))
        if status == 200 and isinstance(body, dict) and isinstance(body.get("method"), str):
            params = {key: value for key, value in body.items() if key != "method"}
            async with self.http.post(f"{self.server.url}/bot{TOKEN}/{body['method']}", json=params) as done:
                assert done.status == 200, await done.text()
        return status

    def kill(self, instance: Instance) -> None:
        self.alive.remove(instance)
        self.killed_at = time.time()
        assert instance.process.process is not None
        instance.process.process.kill()  # SIGKILL now, before this task lets anything else run


async def start_instances(server: BotApiServer, tmp_path: Path, database_url: str) -> list[Instance]:
    instances = []
    for name in ("a", "b"):
        port = free_port()
        url = f"http://127.0.0.1:{port}/telegram/hook"
        folder = tmp_path / name
        folder.mkdir()
        process = BotProcess(server, FRAMEWORK, folder, "--webhook-url", url, "--port", str(port), "--host",
                             "127.0.0.1", database_url=database_url, CODE_TTL_MINUTES="1", BROADCAST_RATE="2")
        instances.append(Instance(name, process, url))
    await asyncio.gather(*(i.process.start(ready_method="setWebhook") for i in instances))
    for instance in instances:
        await server.wait_for(lambda c, url=instance.url: c.method == "setWebhook" and c.ok  # type: ignore[misc]
                              and c.params.get("url") == url, timeout=90)
    return instances


def sent_to(server: BotApiServer, chat_id: int) -> list[Call]:
    return [c for c in server.calls if c.method == "sendMessage" and c.ok and str(c.params["chat_id"]) == str(chat_id)]


def texts_to(server: BotApiServer, chat_id: int) -> list[str]:
    return [str(c.result["text"]) for c in sent_to(server, chat_id)]


def chat_lane(server: BotApiServer, chat_id: int) -> list[str]:
    """The chat's replies, in the order sent, without the broadcast (its own lane, in between)."""
    return [t for t in texts_to(server, chat_id) if t != BROADCAST]


async def step(splitter: Splitter, user: TgUser, act: Callable[[], dict[str, Any]], reply: str,
               timeout: float = 30.0, to: Instance | None = None) -> None:  # noqa: ASYNC109
    await splitter.post(act(), to)
    await user.expect(reply, timeout=timeout)


async def to_the_sms_code(splitter: Splitter, user: TgUser) -> None:
    await asyncio.sleep(splitter.rng.uniform(0, 0.5))
    await step(splitter, user, lambda: user.send("/start"), WELCOME)
    await step(splitter, user, lambda: user.tap("Switch to phone verification"), ASK_EMAIL)
    # An address with no account: the desk answers as for a real one, and no account-wide limit is shared
    await step(splitter, user, lambda: user.send(f"user{user.user_id}@example.org"), PRESS_GET_CODE)
    await step(splitter, user, lambda: user.tap("Get Code"), ASK_SMS)


async def after_the_kill(splitter: Splitter, user: TgUser) -> None:
    """A wrong code (posted around the kill), the expiry timer, then /help to the survivor."""
    await asyncio.sleep(splitter.rng.uniform(0, 3.0))  # about half before the kill, half after
    await step(splitter, user, lambda: user.send("000000"), WRONG, TAKEOVER_TIMEOUT)
    await user.expect(EXPIRED, timeout=TAKEOVER_TIMEOUT)
    await step(splitter, user, lambda: user.send("/help"), HELP, TAKEOVER_TIMEOUT)


async def kill_while_broadcasting(splitter: Splitter, victim: Instance) -> int | None:
    """Once the broadcast is under way, kill the victim as its answer to a wrong code it confirmed reaches the
    server (its lease on that chat held, the answer in flight, the prompt after it queued). Returns that chat."""
    server, since = splitter.server, 0
    for _ in range(SENT_BEFORE_KILL):
        sent = await server.wait_for(lambda c: c.method == "sendMessage" and BROADCAST in str(c.params.get("text")),
                                     timeout=30, since=since)
        since = server.calls.index(sent) + 1
    splitter.victim, splitter.doomed = victim, asyncio.get_running_loop().create_future()
    chat: int | None = None
    try:
        chat, mark = await asyncio.wait_for(splitter.doomed, timeout=5)
        await server.wait_for(lambda c: c.method == "sendMessage" and str(c.params.get("chat_id")) == str(chat),
                              timeout=10, since=mark, finished=False)
    except TimeoutError:  # no update happened to go to it alone, or another instance answered it
        pass
    splitter.kill(victim)
    await victim.process.kill()  # reaps it
    return chat


def repeats_in_a_row(texts: list[str]) -> int:
    """Messages sent again right after themselves: the in-flight send at the kill, repeated by the survivor."""
    return sum(1 for before, after in itertools.pairwise(texts) if before == after)


def collapsed(texts: list[str]) -> list[str]:
    return [t for n, t in enumerate(texts) if n == 0 or texts[n - 1] != t]


def script_of(texts: list[str], script: tuple[str, ...] = SCRIPT) -> list[str]:
    """Each text as the script's fragment it contains."""
    return [next((f for f in script if f in t), f"<unexpected: {t[:60]!r}>") for t in texts]


async def fired_timers(database_url: str, kind: str) -> Counter[int]:
    """How many timers of `kind` fired, per chat."""
    engine = open_database(database_url)
    try:
        async with engine.connect() as conn:
            query = select(tables.timers.c.chat_id).where(tables.timers.c.kind == kind,
                                                          tables.timers.c.fired_at.is_not(None))
            return Counter(int(chat_id) for chat_id in (await conn.execute(query)).scalars())
    finally:
        await engine.dispose()


async def with_instances(server: BotApiServer, tmp_path: Path, database_url: str,
                         play: Callable[[list[Instance]], Awaitable[None]]) -> None:
    await prepare_database(database_url)
    instances = await start_instances(server, tmp_path, database_url)
    try:
        await play(instances)
    finally:
        for instance in instances:
            if instance.process.process is not None:
                await instance.process.stop(signal.SIGKILL)


async def test_two_instances_split_updates_and_one_is_killed(server: BotApiServer, tmp_path: Path,
                                                            postgres_url: str) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    users = [TgUser(server, user_id) for user_id in USERS]
    admin = TgUser(server, ADMIN)
    report: dict[str, Any] = {}

    async def play(instances: list[Instance]) -> None:
        async with ClientSession(timeout=ClientTimeout(total=30)) as http:
            splitter = Splitter(server, list(instances), http)
            await step(splitter, admin, lambda: admin.send("/start"), "Welcome")
            await asyncio.gather(*(to_the_sms_code(splitter, user) for user in users))
            await step(splitter, admin, lambda: admin.send(f"/broadcast {BROADCAST}"), "preview")
            victim = splitter.rng.choice(instances)
            survivor = next(i for i in instances if i is not victim)
            await step(splitter, admin, lambda: admin.tap("📣 Send"), "is starting", to=victim)
            chat, *_ = await asyncio.gather(kill_while_broadcasting(splitter, victim),
                                            *(after_the_kill(splitter, user) for user in users))
            await admin.expect("finished.", timeout=TAKEOVER_TIMEOUT)
            await asyncio.sleep(2)  # anything sent twice would show by now
            report.update(victim=victim.name, after_kill=time.time() - splitter.killed_at, routes=splitter.routes,
                          retried=splitter.retried, killed_at=splitter.killed_at, chat=chat)
            assert await survivor.process.stop() == 0, survivor.process.log.read_text()[-3000:]

    await with_instances(server, tmp_path, postgres_url, play)
    routes: list[tuple[int, tuple[str, ...]]] = report["routes"]
    both = sum(1 for _, to in routes if len(to) == 2)
    repeats = {u.user_id: repeats_in_a_row(chat_lane(server, u.user_id)) for u in [*users, admin]}
    broadcast_copies = {u.user_id: sum(t == BROADCAST for t in texts_to(server, u.user_id)) for u in [*users, admin]}
    final = next(t for t in reversed(texts_to(server, ADMIN)) if "finished." in t)
    uncertain = int(re.search(r"Uncertain[^:]*: (\d+)", final).group(1))  # type: ignore[union-attr]
    print(f"\n{len(routes)} updates, {both} to both instances, {report['retried']} re-posted after the kill; "
          f"killed instance {report['victim']!r}, done {report['after_kill']:.0f} s after the kill, "
          f"{loop.time() - started:.0f} s in all")
    chat: int | None = report["chat"]
    if chat is None:
        print("killed with no answer of its own in flight")
    else:
        resumed = next(c.at for c in sent_to(server, chat) if c.at > report["killed_at"] + 1) - report["killed_at"]
        print(f"killed as its answer to {chat}'s wrong code went out; the survivor went on in that chat "
              f"{resumed:.0f} s after the kill")
    print(f"replies sent twice in a row: {sum(repeats.values())} {repeats}; broadcast copies {broadcast_copies}, "
          f"uncertain {uncertain}")

    assert await processed_count(postgres_url, [update_id for update_id, _ in routes]) == len(routes)
    for user in users:
        texts = chat_lane(server, user.user_id)
        assert script_of(collapsed(texts)) == list(SCRIPT), (user.user_id, texts)  # once each, in commit order
        shown = [m.message_id for m in server.chat_messages(user.user_id) if m.from_bot]
        assert [c.result["message_id"] for c in sent_to(server, user.user_id)] == shown  # what the user saw
    admin_texts = chat_lane(server, ADMIN)
    assert script_of(collapsed(admin_texts), ADMIN_SCRIPT) == list(ADMIN_SCRIPT), admin_texts
    assert sum(repeats.values()) <= MAX_IN_FLIGHT_REPEATS
    answers = Counter(str(c.params["callback_query_id"]) for c in server.calls_of("answerCallbackQuery") if c.ok)
    assert all(count == 1 for count in answers.values()), answers
    assert len(answers) == len(USERS) * 2 + 1  # two taps per user and the admin's Send
    assert all(copies <= 1 for copies in broadcast_copies.values())
    assert sum(1 for copies in broadcast_copies.values() if copies == 0) == uncertain
    assert f"Recipients: {len(broadcast_copies)}" in final and not server.errors
    assert await fired_timers(postgres_url, "codes_expired") == Counter(USERS)
