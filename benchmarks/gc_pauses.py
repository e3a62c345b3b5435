"""Garbage-collector pauses of the real `recovery-bot run` process under load, with and without `gc.freeze()`.

Run: python benchmarks/gc_pauses.py [ptb|aiogram] [freeze: 1|0] [users] [rounds] — the local Bot API server
(tests/support/botapi.py) feeds `users` private chats, each sending /start or /help once per round; a round ends
when every chat has its answer. The bot process records each collection through `gc.callbacks`; only those made
while the load ran are counted. CPU time (of the thread that collected) is the figure to compare: wall time on a
busy machine includes time the process was not running.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.botapi import BotApiServer  # noqa: E402
from tests.support.e2e import TOKEN, BotProcess, prepare_database  # noqa: E402

CHILD = """
import atexit, gc, json, os, sys, time
pauses, started = [], []

def record(phase, info):
    if phase == "start":
        started[:] = [time.perf_counter(), time.thread_time()]
    else:
        wall, cpu = time.perf_counter() - started[0], time.thread_time() - started[1]
        pauses.append((info["generation"], wall, cpu, time.time()))

gc.callbacks.append(record)
import bot.run
if os.environ["GC_FREEZE"] == "0":
    bot.run.freeze_start_up_objects = lambda: None

def dump():
    with open(os.environ["GC_OUT"], "w") as out:
        json.dump({"pauses": pauses, "frozen": gc.get_freeze_count()}, out)

atexit.register(dump)
from bot.cli import main
sys.exit(main(["run"]))
"""


async def measure(framework: str, freeze: str, users: int, rounds: int) -> None:
    folder = Path(tempfile.mkdtemp(prefix="gc_pauses_"))
    out = folder / "gc.json"
    async with BotApiServer(token=TOKEN) as server:
        bot = BotProcess(server, framework, folder, GC_FREEZE=freeze, GC_OUT=str(out))
        await prepare_database(bot.database_url)
        with bot.log.open("a") as log:
            bot.process = await asyncio.create_subprocess_exec(sys.executable, "-c", CHILD, env=bot.env,
                                                               cwd=str(ROOT), stdout=log, stderr=log)
        await server.wait_for(lambda c: c.method == "getUpdates", timeout=120, finished=False)
        began, clock = time.time(), time.perf_counter()
        for round_ in range(rounds):
            mark = len(server.calls)
            for user in range(users):
                server.user_sends_text(10_000 + user, "/start" if round_ % 2 == 0 else "/help", language_code="en")
            for user in range(users):
                chat = str(10_000 + user)
                await server.wait_for(lambda c, chat=chat: c.method == "sendMessage"  # type: ignore[misc]
                                      and str(c.params.get("chat_id")) == chat, timeout=300, since=mark)
        seconds, ended = time.perf_counter() - clock, time.time()
        await bot.stop()
    data = json.loads(out.read_text())
    during = [(gen, wall, cpu) for gen, wall, cpu, at in data["pauses"] if began <= at <= ended]
    print(f"{framework}, freeze={freeze}: {users * rounds} updates in {seconds:.1f} s; "
          f"{data['frozen']} objects frozen")
    for generation in (0, 1, 2):
        walls = sorted(wall for gen, wall, _ in during if gen == generation)
        cpus = sorted(cpu for gen, _, cpu in during if gen == generation)
        if walls:
            print(f"  gen {generation}: {len(walls)} collections; CPU longest {cpus[-1] * 1000:.0f} ms, "
                  f"total {sum(cpus):.2f} s; wall longest {walls[-1] * 1000:.0f} ms, "
                  f"median {walls[len(walls) // 2] * 1000:.1f} ms")


if __name__ == "__main__":
    arguments = sys.argv[1:] + ["aiogram", "1", "200", "10"][len(sys.argv) - 1:]
    asyncio.run(measure(arguments[0], arguments[1], int(arguments[2]), int(arguments[3])))
