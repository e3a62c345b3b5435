"""End to end: the real `recovery-bot run` process (polling) against the local Bot API test server, beside a
minimal echo bot of the same framework, driven by simulated users; and the memory of a desk holding open cases.

The test server (tests/support/botapi.py) runs in this process with the load driver; the bot is a subprocess.
A *step* is one user action (a text or a button press) and ends when the bot's message the user waits for
arrives at the server (the sendMessage call that carries the expected text). Codes arrive in the chat, as the
e2e tests read them (`CODE_DELIVERY=chat`: "SMS to +1•••34: 123456"); Method 3's code is the TOTP of the
account's key, computed by the simulated user.

Closed loop: `concurrency` users, each starting the next flow (a fresh user and a fresh account) as soon as its
last one ended. Open loop: flows start at a fixed rate whatever the bot's answers (used at half the measured
saturation rate).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import re
import shutil
import signal
import sqlite3
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyotp

from benchmarks.common import ROOT, cpu_seconds, memory, ms, quantile
from benchmarks.targets import e2e_checks
from tests.support.botapi import ApiError, BotApiServer, Call, MethodHandler

TOKEN = "123456:BENCH-token"
SECRET_KEY = "bench-secret-key-" + "k" * 32
INBOUND_LIMIT = 10_000  # the setting's maximum: simulated users act far faster than people
STARTUP_SECONDS = 120
LOST_AFTER = 30.0  # a step with no answer for this long counts as lost

Action = tuple[str, str, str]  # ("send" | "tap", text or label, fragment of the awaited message)

METHOD_1: list[Action] = [
    ("send", "/start", "Welcome to the official"),
    ("tap", "Switch to phone verification", "Which email address"),
    ("send", "{email}", "Press Get Code"),
    ("tap", "Get Code", "Send me the 6-digit code from the SMS"),
    ("send", "{sms}", "Now send me the 6-digit code from the email"),
    ("send", "{mail}", "Press Submit"),
    ("tap", "Submit", "Your account now uses phone verification"),
]
METHOD_3: list[Action] = [
    ("send", "/start", "Welcome to the official"),
    ("tap", "Reset with my backup key", "Which email address"),
    ("send", "{email}", "install the authenticator app again"),
    ("tap", "The app is installed", "Never send this key to anyone"),
    ("tap", "I added it", "send me the 6-digit code"),
    ("send", "{totp}", "The code matches"),
]
OPEN_CASE: list[Action] = METHOD_3[:2]  # a case is open once the method is chosen
ECHO: list[Action] = [("send", f"ping {i}", f"ping {i}") for i in range(10)]

_SMS = re.compile(r"SMS to \S+: (\d{6})")
_MAIL = re.compile(r"Email to \S+: (\d{6})")


@dataclass(frozen=True)
class Account:
    email: str
    phone: str
    totp: str


def make_accounts(count: int, prefix: str) -> list[Account]:
    return [Account(f"{prefix}{i}@bench.example", f"+1555{i:07d}", pyotp.random_base32()) for i in range(count)]


def accounts_csv(accounts: list[Account]) -> str:
    lines = ["email,phone,totp_secret,security_question,security_answer,identity_verified"]
    lines += [f"{a.email},{a.phone},{a.totp},,,false" for a in accounts]
    return "\n".join(lines) + "\n"


class LoadServer(BotApiServer):
    """The test Bot API server, telling a listener about every answered call (no scans of the call list)."""

    def __init__(self) -> None:
        super().__init__(token=TOKEN, username="bench_desk_bot", first_name="Bench Desk")
        self.listener: Callable[[Call], None] | None = None
        self.counts: Counter[str] = Counter()

    async def _answer(self, call: Call, handler: MethodHandler | None,
                      fault: ApiError | None = None) -> tuple[int, dict[str, Any]]:
        status, body = await super()._answer(call, handler, fault)
        call.status, call.response = status, body
        self.counts[call.method] += 1
        if self.listener is not None and status == 200:
            self.listener(call)
        return status, body

    def find_button(self, chat_id: int, label: str) -> tuple[int, str] | None:
        """The newest bot message in the chat with a callback button `label`: (message id, callback data)."""
        for message in reversed(list(self._messages.get(chat_id, {}).values())):
            for row in message.get("reply_markup", {}).get("inline_keyboard", []):
                for button in row:
                    if button.get("text") == label and "callback_data" in button:
                        return int(message["message_id"]), str(button["callback_data"])
        return None


@dataclass
class Walker:
    """One simulated person going through one flow."""

    user_id: int
    account: Account | None
    script: list[Action]
    index: int = 0
    issued_at: float = 0.0
    waiting: bool = False  # the action waits for a code or a button not shown yet
    codes: dict[str, str] = field(default_factory=dict)


@dataclass
class Load:
    """Drives walkers through the server and keeps the step latencies and completion times."""

    server: LoadServer
    script: list[Action]
    jobs: Iterator[tuple[int, Account | None]]
    latencies: list[float] = field(default_factory=list)
    completions: list[float] = field(default_factory=list)
    issued: int = 0
    flows_done: int = 0
    by_chat: dict[int, Walker] = field(default_factory=dict)
    active: int = 0
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    refill: bool = True  # closed loop: a finished walker starts the next job
    closing: bool = False  # the window is over: a walker whose step completes issues no further step
    idle: asyncio.Event = field(default_factory=asyncio.Event)  # set when no walker is left

    def start_one(self) -> bool:
        job = next(self.jobs, None)
        if job is None:
            return False
        user_id, account = job
        walker = Walker(user_id, account, self.script)
        self.by_chat[user_id] = walker
        self.active += 1
        self._issue(walker)
        return True

    def _text(self, walker: Walker, template: str) -> str | None:
        account = walker.account
        if "{sms}" in template:
            return walker.codes.get("sms")
        if "{mail}" in template:
            return walker.codes.get("mail")
        if "{totp}" in template:
            return pyotp.TOTP(account.totp).now() if account else None
        return template.replace("{email}", account.email if account else "")

    def _issue(self, walker: Walker) -> None:
        kind, value, _ = walker.script[walker.index]
        if kind == "send":
            text = self._text(walker, value)
            if text is None:
                walker.waiting = True
                return
            walker.waiting = False
            walker.issued_at = time.perf_counter()
            self.server.user_sends_text(walker.user_id, text, language_code="en")
        else:
            button = self.server.find_button(walker.user_id, value)
            if button is None:
                walker.waiting = True
                return
            walker.waiting = False
            walker.issued_at = time.perf_counter()
            self.server.user_presses(walker.user_id, button[0], button[1], language_code="en")
        self.issued += 1

    def on_call(self, call: Call) -> None:
        if call.method not in ("sendMessage", "editMessageText"):
            return
        try:
            walker = self.by_chat.get(int(call.params.get("chat_id", 0)))
        except (TypeError, ValueError):
            return
        if walker is None:
            return
        result = call.result
        text = str(result.get("text", "")) if isinstance(result, dict) else ""
        for name, pattern in (("sms", _SMS), ("mail", _MAIL)):
            found = pattern.search(text)
            if found:
                walker.codes[name] = found.group(1)
        if walker.waiting:
            self._issue(walker)
            return
        if call.method != "sendMessage" or walker.script[walker.index][2] not in text:
            return
        now = time.perf_counter()
        self.latencies.append(now - walker.issued_at)
        self.completions.append(now)
        walker.index += 1
        if walker.index < len(walker.script) and not self.closing:
            self._issue(walker)
            return
        del self.by_chat[walker.user_id]
        self.active -= 1
        self.flows_done += walker.index == len(walker.script)
        if self.refill:
            self.start_one()
        if not self.active:
            self.idle.set()
        self.changed.set()

    def lost(self) -> int:
        return len(self.by_chat)


@dataclass
class BotProcess:
    """A bot subprocess (the desk or an echo bot) with its own log; CPU and memory read from /proc."""

    server: LoadServer
    argv: list[str]
    env: dict[str, str]
    log: Path
    process: asyncio.subprocess.Process | None = None
    pyspy: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    async def start(self) -> float:
        mark = len(self.server.calls)
        began = time.perf_counter()
        with self.log.open("a") as log:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable, *self.argv, env=self.env, cwd=str(ROOT), stdout=log, stderr=log)
        await self.server.wait_for(lambda c: c.method == "getUpdates", timeout=STARTUP_SECONDS, since=mark,
                                   finished=False)
        return time.perf_counter() - began

    async def stop(self) -> int:
        assert self.process is not None
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            code = await asyncio.wait_for(self.process.wait(), timeout=30)
        except TimeoutError:
            self.process.kill()
            code = await self.process.wait()
        return code


def bot_env(server: LoadServer, framework: str, database_url: str) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(ROOT), "HOME": os.environ.get("HOME", "/"),
        "TELEGRAM_BOT_TOKEN": TOKEN, "TELEGRAM_API_URL": server.url, "DATABASE_URL": database_url,
        "SECRET_KEY": SECRET_KEY, "BOT_FRAMEWORK": framework, "SERVICE_NAME": "Acme", "LOG_LEVEL": "INFO",
        "ADMIN_IDS": "900", "CODE_DELIVERY": "chat",
        "INBOUND_LIMIT": str(INBOUND_LIMIT), "INBOUND_WINDOW_SECONDS": "10",
    }


async def cli(env: dict[str, str], *args: str) -> None:
    process = await asyncio.create_subprocess_exec(sys.executable, "-m", "bot.cli", *args, env=env, cwd=str(ROOT),
                                                   stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"recovery-bot {' '.join(args)} failed: {out.decode()[-2000:]}")


async def drive(server: LoadServer, bot: BotProcess, script: list[Action], jobs: Iterator[tuple[int, Account | None]],
                *, concurrency: int = 0, rate: float = 0.0, duration: float = 0.0) -> dict[str, Any]:
    """Closed loop (`concurrency` walkers) or open loop (`rate` flows/s for `duration` s); returns the figures."""
    await asyncio.sleep(0.3)  # let the previous phase's last deliveries pass
    load = Load(server, script, jobs, refill=concurrency > 0)
    server.listener = load.on_call
    calls_before = Counter(server.counts)
    cpu_before = cpu_seconds(bot.pid)
    driver_before = time.process_time()
    began = time.perf_counter()
    if concurrency:
        for _ in range(concurrency):
            if not load.start_one():
                break
        if duration:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(load.idle.wait(), duration)
            load.refill = False
            load.closing = True
            # a walker waiting for a code or a button has no step in flight: it just stops
            for walker in [w for w in load.by_chat.values() if w.waiting]:
                del load.by_chat[walker.user_id]
                load.active -= 1
    else:
        started = 0
        while time.perf_counter() - began < duration:
            due = int((time.perf_counter() - began) * rate) + 1
            while started < due and load.start_one():
                started += 1
            await asyncio.sleep(0.002)
    # until every flow ended, or no step completed for LOST_AFTER seconds
    while load.active:
        load.changed.clear()
        last = load.completions[-1] if load.completions else began
        if time.perf_counter() - last > LOST_AFTER:
            break
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(load.changed.wait(), 0.5)
    ended = load.completions[-1] if load.completions else time.perf_counter()
    lost = load.lost()
    cpu = cpu_seconds(bot.pid) - cpu_before
    driver_cpu = time.process_time() - driver_before
    server.listener = None
    calls = Counter(server.counts)
    calls.subtract(calls_before)
    steps = len(load.latencies)
    # Rates and stalls count while the load is offered (the window), not while the last steps drain.
    window_end = began + duration if duration else ended
    in_window = [t for t in load.completions if t <= window_end]
    window = max(window_end - began, 1e-9)
    marks = [began, *sorted(in_window), window_end]
    stall = max((b - a for a, b in itertools.pairwise(marks)), default=0.0)
    api = sum(n for method, n in calls.items() if method != "getUpdates")
    return {
        "steps": steps, "flows": load.flows_done, "lost_steps": lost, "seconds": round(ended - began, 2),
        "steps_in_window": len(in_window), "updates_per_s": round(len(in_window) / window, 1),
        "p50_ms": ms(quantile(load.latencies, 0.50)), "p99_ms": ms(quantile(load.latencies, 0.99)),
        "max_ms": ms(max(load.latencies, default=None) if load.latencies else None),
        "longest_stall_ms": ms(stall),
        "api_calls_per_update": round(api / steps, 2) if steps else None,
        "get_updates_per_update": round(calls["getUpdates"] / steps, 3) if steps else None,
        "calls_by_method": {k: v for k, v in calls.items() if v},
        "bot_cpu_s": round(cpu, 2), "server_and_driver_cpu_s": round(driver_cpu, 2),
        "bot_cpu_ms_per_update": round(cpu * 1000 / steps, 2) if steps else None,
        "concurrency": concurrency or None, "rate_flows_per_s": round(rate, 1) if rate else None,
        "window_s": duration or None,
    }


def users(start: int) -> Iterator[int]:
    n = start
    while True:
        yield n
        n += 1


def with_accounts(ids: Iterator[int], pool: Iterator[Account], limit: int) -> Iterator[tuple[int, Account | None]]:
    for _ in range(limit):
        account = next(pool, None)
        if account is None:
            return
        yield next(ids), account


def without_accounts(ids: Iterator[int], limit: int) -> Iterator[tuple[int, Account | None]]:
    for _ in range(limit):
        yield next(ids), None


@dataclass(frozen=True)
class E2eSizes:
    """Closed loops run for a window (seconds) and then let the steps in flight finish."""

    small_users: int = 100
    small_seconds: float = 12.0
    large_users: int = 1000
    large_seconds: float = 8.0
    half_seconds: float = 8.0
    echo_users: int = 100
    echo_seconds: float = 6.0
    live_cases: int = 600  # opened through the bot (/start, then a method)
    open_cases: int = 10_000  # held in all: the rest inserted as copies of a live one
    open_case_users: int = 500
    profile_seconds: float = 8.0

    @classmethod
    def quick(cls) -> E2eSizes:
        return cls(small_users=20, small_seconds=1.5, large_users=50, large_seconds=1.5, half_seconds=1.5,
                   echo_users=20, echo_seconds=1.5, live_cases=100, open_cases=300, open_case_users=50,
                   profile_seconds=2.0)


async def run_framework(framework: str, folder: Path, sizes: E2eSizes, profile: bool,
                        log: Callable[[str], None], database_url: str | None = None) -> dict[str, Any]:
    """Every end-to-end figure and the memory figures for one framework: one echo process, one desk process. On
    SQLite by default; given a PostgreSQL `database_url` (an empty database), the same phases without the memory
    figures (which insert into SQLite) and without a profile."""
    os.makedirs(folder, exist_ok=True)
    on_sqlite = database_url is None
    result: dict[str, Any] = {"framework": framework, "inbound_limit": INBOUND_LIMIT,
                              "database": "SQLite" if on_sqlite else "PostgreSQL"}
    async with LoadServer() as server:
        database_url = database_url or f"sqlite+aiosqlite:///{folder}/desk.db"
        env = bot_env(server, framework, database_url)
        # accounts enough for every flow the windows can start (flows that start use one each)
        pool_list = make_accounts(5_000 if sizes.large_users >= 1000 else 600, f"{framework}-")
        csv_file = folder / "accounts.csv"
        csv_file.write_text(accounts_csv(pool_list))
        began = time.perf_counter()
        await cli(env, "db", "upgrade")
        await cli(env, "accounts", "import", str(csv_file))
        result["import_accounts"] = {"accounts": len(pool_list), "seconds": round(time.perf_counter() - began, 1)}
        log(f"{framework}: {len(pool_list)} accounts imported with `recovery-bot accounts import` "
            f"in {result['import_accounts']['seconds']} s")
        pool = iter(pool_list)
        ids = users(1_000_000)

        echo = BotProcess(server, [str(ROOT / "benchmarks" / f"echo_{framework}.py")], env, folder / "echo.log")
        result["echo_startup_s"] = round(await echo.start(), 1)
        result["echo"] = await drive(server, echo, ECHO, without_accounts(ids, 10**9),
                                     concurrency=sizes.echo_users, duration=sizes.echo_seconds)
        await echo.stop()
        log(f"{framework}: echo x{sizes.echo_users}: {result['echo']['updates_per_s']} updates/s")

        desk = BotProcess(server, ["-m", "bot.cli", "run"], env, folder / "desk.log")
        result["desk_startup_s"] = round(await desk.start(), 1)
        await asyncio.sleep(1.0)
        if on_sqlite:
            result["memory"] = await hold_open_cases(server, desk, folder / "desk.db", ids, sizes)
            log(f"{framework}: {result['memory']['open_cases']} open cases held, peak RSS "
                f"{result['memory']['peak_rss_bytes'] / 2**20:.0f} MiB")

        phases: dict[str, Any] = {}
        for name, script in (("method1", METHOD_1), ("method3", METHOD_3)):
            sat = await drive(server, desk, script, with_accounts(ids, pool, 10**9),
                              concurrency=sizes.small_users, duration=sizes.small_seconds)
            phases[f"{name}_small"] = sat
            log(f"{framework}: {name} x{sizes.small_users}: {sat['updates_per_s']} updates/s, p99 {sat['p99_ms']} ms")
            rate = sat["updates_per_s"] / 2 / len(script)
            half = await drive(server, desk, script, with_accounts(ids, pool, 10**9), rate=rate,
                               duration=sizes.half_seconds)
            half["offered_updates_per_s"] = round(sat["updates_per_s"] / 2, 1)
            phases[f"{name}_half"] = half
            log(f"{framework}: {name} at half load ({half['offered_updates_per_s']} updates/s offered): "
                f"p99 {half['p99_ms']} ms")
        for name, script in (("method1", METHOD_1), ("method3", METHOD_3)):
            big = await drive(server, desk, script, with_accounts(ids, pool, 10**9),
                              concurrency=sizes.large_users, duration=sizes.large_seconds)
            phases[f"{name}_large"] = big
            log(f"{framework}: {name} x{sizes.large_users}: {big['updates_per_s']} updates/s, "
                f"lost {big['lost_steps']}, stall {big['longest_stall_ms']} ms")
        result["phases"] = phases
        if on_sqlite and profile and any(check.met is False for check in e2e_checks(result)):
            result["profile"] = await profile_desk(server, desk, folder, ids, pool, sizes)
        result["desk_exit_code"] = await desk.stop()
        result["accounts_left"] = sum(1 for _ in pool)
    return result


async def hold_open_cases(server: LoadServer, desk: BotProcess, database: Path, ids: Iterator[int],
                          sizes: E2eSizes) -> dict[str, Any]:
    """Open `live_cases` cases through the bot (/start, then Method 3), then top the open cases up to
    `open_cases` with copies of a live one inserted into the database; RSS before and after."""
    before = memory(desk.pid)
    opened = await drive(server, desk, OPEN_CASE, without_accounts(ids, sizes.live_cases),
                         concurrency=sizes.open_case_users)
    live = opened["flows"]
    copies = max(0, sizes.open_cases - live)
    if copies:
        with sqlite3.connect(database, timeout=30) as db:
            db.execute(
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?) "
                "INSERT INTO cases SELECT printf('copy%012d', i), 8000000 + i, 8000000 + i, account_id, flow, step, "
                "data, status, turn, created_at, updated_at, closed_at FROM n, "
                "(SELECT * FROM cases WHERE status = 'open' LIMIT 1)", (copies,))
            db.execute(
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?) "
                "INSERT INTO users (id, chat_id, language, blocked, first_seen, last_seen) "
                "SELECT 8000000 + i, 8000000 + i, language, blocked, first_seen, last_seen "
                "FROM n, (SELECT * FROM users WHERE id >= 1000000 LIMIT 1)", (copies,))
            held = db.execute("SELECT count(*) FROM cases WHERE status = 'open'").fetchone()[0]
    else:
        with sqlite3.connect(database, timeout=30) as db:
            held = db.execute("SELECT count(*) FROM cases WHERE status = 'open'").fetchone()[0]
    await asyncio.sleep(1.0)
    after = memory(desk.pid)
    return {
        "open_cases": held, "opened_live": live, "inserted_copies": copies,
        "rss_before_bytes": before["VmRSS"], "rss_after_bytes": after["VmRSS"], "peak_rss_bytes": after["VmHWM"],
        "bytes_per_live_case": round((after["VmRSS"] - before["VmRSS"]) / live) if live else None,
        "opening": opened,
    }


async def profile_desk(server: LoadServer, desk: BotProcess, folder: Path, ids: Iterator[int],
                       pool: Iterator[Account], sizes: E2eSizes) -> dict[str, Any]:
    """py-spy samples of the desk process during a Method 1 closed loop (after the measured phases)."""
    pyspy = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if pyspy is None:
        return {"available": False, "why": "py-spy is not installed (pip install -e '.[bench]')"}
    out = folder / "desk.pyspy.txt"
    spy = await asyncio.create_subprocess_exec(
        pyspy, "record", "--pid", str(desk.pid), "--format", "raw", "--output", str(out), "--rate", "100",
        "--nonblocking", stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    await asyncio.sleep(1.0)
    figures = await drive(server, desk, METHOD_1, with_accounts(ids, pool, 10**9),
                          concurrency=sizes.small_users, duration=sizes.profile_seconds)
    spy.send_signal(signal.SIGINT)
    _, err = await asyncio.wait_for(spy.communicate(), timeout=30)
    if not out.exists():
        return {"available": False, "why": err.decode()[-500:]}
    return {"available": True, "phase": figures, **top_costs(out.read_text())}


def top_costs(raw: str, count: int = 15) -> dict[str, Any]:
    """Self and inclusive sample shares per function from py-spy's raw (collapsed stacks) output."""
    own: Counter[str] = Counter()
    # where the time goes in the project's own code and the frameworks, not in the event loop's frames
    inclusive: Counter[str] = Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, number = line.rpartition(" ")
        if not stack or not number.isdigit():
            continue
        samples = int(number)
        frames = [re.sub(r":\d+\)$", ")", f) for f in stack.split(";")]
        total += samples
        own[frames[-1]] += samples
        for frame in set(frames):
            if " (flows/" in frame or " (bot/" in frame:
                inclusive[frame] += samples

    def share(counter: Counter[str]) -> list[tuple[str, float]]:
        return [(name, round(100 * n / total, 1)) for name, n in counter.most_common(count)] if total else []
    return {"samples": total, "self_percent": share(own), "inclusive_percent": share(inclusive)}
