"""Faults on Telegram's side, against the real `recovery-bot run` process on either framework (issue 14).

The Bot API answers 5xx, holds a call until the client gives up, or drops the connection: the bot retries with a
growing, jittered delay, every user still gets every reply exactly once, the process stays up, and each retry
is one short log line. Then a thousand users send /start at once: all are welcomed once, in bounded memory.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

from tests.support.botapi import BotApiServer
from tests.support.e2e import ADMIN, BotProcess, TgUser, greet, prepare_database

WELCOME = "Welcome to the official Acme account recovery desk."
STALL = 15.0  # longer than either client's request timeout: python-telegram-bot's 5 s, our aiogram session's 10 s


def statuses(server: BotApiServer, method: str, chat_id: int) -> list[int | None]:
    return [c.status for c in server.calls_of(method) if str(c.params.get("chat_id")) == str(chat_id)]


def retry_lines(bot: BotProcess) -> list[str]:
    return [line for line in bot.log.read_text().splitlines() if "retrying in" in line]


def assert_up_and_quiet(bot: BotProcess) -> None:
    """The process is still serving and no fault left a traceback in its log."""
    assert bot.process is not None and bot.process.returncode is None
    assert "Traceback" not in bot.log.read_text()


async def tap_switch_to_phone(user: TgUser) -> None:
    user.tap("Switch to phone verification")
    assert await user.answered(timeout=30) == ""
    await user.expect("Which email address", timeout=30)


async def test_5xx_answers_are_retried_and_each_reply_arrives_once(bot: BotProcess, server: BotApiServer) -> None:
    user = TgUser(server, 201)
    for status in (502, 503, 500):
        server.fail_next("sendMessage", status=status)
    await greet(user)
    assert statuses(server, "sendMessage", 201) == [502, 503, 500, 200]
    server.fail_next("answerCallbackQuery", status=502)
    server.fail_next("editMessageText", status=503)
    await tap_switch_to_phone(user)
    assert [c.status for c in server.calls_of("answerCallbackQuery")] == [502, 200]
    assert statuses(server, "editMessageText", 201) == [503, 200]
    assert "✔ Switch to phone verification" in server.chat_messages(201)[-2].text  # the edit went through
    await user.idle()
    assert [WELCOME in text for text in user.sent_texts()] == [True, False]  # the welcome, the question: once each
    assert len(retry_lines(bot)) == 5
    assert_up_and_quiet(bot)


async def test_a_stalled_reply_times_out_and_goes_again_once(bot: BotProcess, server: BotApiServer) -> None:
    user = TgUser(server, 202)
    server.stall_next("sendMessage", seconds=STALL)
    user.send("/start")
    await user.expect(WELCOME, timeout=STALL + 15)
    [stalled, sent] = server.calls_of("sendMessage")
    assert stalled.status == 0 and stalled.client_gone  # the bot gave up on it before the server dropped it
    assert sent.ok
    await user.idle()
    assert len(user.sent_texts()) == 1
    assert len(retry_lines(bot)) == 1
    assert_up_and_quiet(bot)


async def test_reset_connections_are_retried_and_each_reply_arrives_once(bot: BotProcess,
                                                                          server: BotApiServer) -> None:
    user = TgUser(server, 203)
    server.reset_next("sendMessage", count=2)
    await greet(user)
    assert statuses(server, "sendMessage", 203) == [0, 0, 200]
    server.reset_next("answerCallbackQuery")
    server.reset_next("editMessageText")
    await tap_switch_to_phone(user)
    assert [c.status for c in server.calls_of("answerCallbackQuery")] == [0, 200]
    assert statuses(server, "editMessageText", 203) == [0, 200]
    await user.idle()
    assert [WELCOME in text for text in user.sent_texts()] == [True, False]
    assert len(retry_lines(bot)) == 4
    assert_up_and_quiet(bot)


async def test_get_updates_faults_delay_updates_but_lose_none(bot: BotProcess, server: BotApiServer) -> None:
    first, second = TgUser(server, 204), TgUser(server, 205)
    server.fail_next("getUpdates", status=502)  # the polls after the one in flight now
    server.reset_next("getUpdates")
    server.stall_next("getUpdates", seconds=2)  # shorter than the long poll's timeout: the server drops it
    await greet(first)
    second.send("/start")  # while the polls fail
    await second.expect(WELCOME, timeout=30)
    failed_polls = [c.status for c in server.calls_of("getUpdates") if c.done and not c.ok]
    assert failed_polls == [502, 0, 0]
    await first.idle()
    assert len(first.sent_texts()) == 1 and len(second.sent_texts()) == 1  # nothing fetched twice acted twice
    assert len([line for line in retry_lines(bot) if "getUpdates" in line]) == 3
    assert_up_and_quiet(bot)


# -- a thousand users at once ------------------------------------------------------------------------------

CROWD = 1000
FEW = 5
RSS_GROWTH_BOUND_MB = 40


def memory_mb(bot: BotProcess, field: str) -> float:
    """The bot process's resident memory (`VmRSS`), or its peak since start or the last reset (`VmHWM`), in MB."""
    assert bot.process is not None
    for line in Path(f"/proc/{bot.process.pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no {field} in /proc/<pid>/status")


def reset_peak_memory(bot: BotProcess) -> None:
    """Start the peak (VmHWM) again from the memory in use now: the start-up's own peak (importing a framework,
    building its models) would hide whatever the burst adds."""
    assert bot.process is not None
    Path(f"/proc/{bot.process.pid}/clear_refs").write_text("5")


def welcomes(server: BotApiServer) -> Counter[int]:
    return Counter(int(c.params["chat_id"]) for c in server.calls_of("sendMessage")
                   if c.ok and WELCOME in str(c.result.get("text", "")))


async def all_welcomed(server: BotApiServer, chats: range, timeout: float) -> None:  # noqa: ASYNC109
    """Wait until every chat in `chats` got its welcome (checked now and then: a wait on each call would scan
    thousands of calls a thousand times)."""
    for _ in range(int(timeout * 4)):
        missing = len(set(chats) - set(welcomes(server)))
        if not missing:
            return
        await asyncio.sleep(0.25)
    raise AssertionError(f"{missing} of {len(chats)} users never got the welcome")


async def test_a_thousand_users_at_once_are_each_welcomed_once_in_bounded_memory(
        bot: BotProcess, server: BotApiServer, framework: str) -> None:
    few = range(300, 300 + FEW)
    for user_id in few:
        server.user_sends_text(user_id, "/start", language_code="en")
    await all_welcomed(server, few, timeout=30)
    await TgUser(server, 300).idle()
    started_with = memory_mb(bot, "VmHWM")
    baseline = memory_mb(bot, "VmRSS")
    reset_peak_memory(bot)
    crowd = range(10_000, 10_000 + CROWD)
    for user_id in crowd:  # all queued at once: the bot fetches them 100 a poll
        server.user_sends_text(user_id, "/start", language_code="en")
    loop = asyncio.get_running_loop()
    started = loop.time()
    await all_welcomed(server, crowd, timeout=120)
    took = loop.time() - started
    await TgUser(server, 300).idle()
    peak = memory_mb(bot, "VmHWM")
    print(f"\n{framework}: {CROWD} users welcomed in {took:.1f} s; RSS {baseline:.1f} MB after {FEW} users (peak "
          f"{started_with:.1f} MB at start-up), peak {peak:.1f} MB during the {CROWD} (+{peak - baseline:.1f} MB)")
    counts = welcomes(server)
    assert {counts[user_id] for user_id in [*few, *crowd]} == {1}
    assert peak - baseline < RSS_GROWTH_BOUND_MB
    assert_up_and_quiet(bot)


async def test_faults_while_starting_up_are_retried(server: BotApiServer, framework: str, tmp_path: Path) -> None:
    server.fail_next("setMyCommands", status=502)
    server.reset_next("setMyCommands")
    server.reset_next("deleteWebhook")
    bot = BotProcess(server, framework, tmp_path)
    await prepare_database(bot.database_url)
    await bot.start()
    try:
        await greet(TgUser(server, 206))
        assert [c["command"] for c in server.my_commands({"type": "all_private_chats"})] == [
            "start", "status", "cancel", "help", "language", "privacy", "mydata", "delete"]
        assert server.my_commands({"type": "chat", "chat_id": ADMIN})
        assert len(retry_lines(bot)) == 3
        assert_up_and_quiet(bot)
    finally:
        assert await bot.stop() == 0


async def test_a_reply_stalled_at_a_stop_goes_once_after_the_restart(bot: BotProcess, server: BotApiServer) -> None:
    user = TgUser(server, 207)
    server.stall_next("sendMessage", seconds=STALL)
    user.send("/start")
    await server.wait_for(lambda c: c.method == "sendMessage", since=user.mark, finished=False)
    assert await bot.stop() == 0  # while the reply hangs
    assert user.sent_texts() == []
    await bot.start()
    await user.expect(WELCOME, timeout=30)
    await user.idle()
    assert len(user.sent_texts()) == 1
    assert_up_and_quiet(bot)
