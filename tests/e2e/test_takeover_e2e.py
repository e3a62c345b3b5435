"""Account-takeover attempts against the real `recovery-bot run` process, once per framework, over the Bot API.

Each test plays an attacker the desk must stop — a SIM-swapper, someone who knows only an email, a guesser with
many chats — and checks both what Telegram shows and what the account table holds afterwards.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import select

from flows.store.database import open_database
from flows.store.tables import accounts
from tests.support.botapi import BotApiServer
from tests.support.desk import ADA_TOTP, totp_now
from tests.support.e2e import BotProcess, TgUser, walk_backup_key_to_the_code, walk_phone_switch_to_the_codes


async def ada(bot: BotProcess) -> object:
    engine = open_database(bot.database_url)
    try:
        async with engine.connect() as conn:
            return (await conn.execute(select(accounts).where(accounts.c.email == "ada@example.com"))).one()
    finally:
        await engine.dispose()


def other(code: str) -> str:
    return f"{(int(code) + 1) % 1_000_000:06d}"


async def test_a_sim_swapper_cannot_switch_ada_to_phone(bot: BotProcess, server: BotApiServer) -> None:
    attacker = TgUser(server, 301)
    await walk_phone_switch_to_the_codes(attacker)
    attacker.send(attacker.last_code("SMS"))  # the swapped SIM receives this one
    await attacker.expect("Now send me the 6-digit code from the email")
    for _ in range(5):  # but not the mailbox
        attacker.send(other(attacker.last_code("Email")))
        await attacker.expect("not right" if _ < 4 else "Too many wrong codes")
    assert "Submit" not in str(server.last_bot_message(301).keyboard)
    account = await ada(bot)
    assert account.two_factor == "totp" and account.totp_secret_enc is not None  # type: ignore[attr-defined]
    assert account.withdrawals_locked_until is None  # type: ignore[attr-defined]


async def test_switching_with_both_codes_locks_withdrawals(bot: BotProcess, server: BotApiServer) -> None:
    owner = TgUser(server, 302)
    await walk_phone_switch_to_the_codes(owner)
    owner.send(owner.last_code("SMS"))
    await owner.expect("from the email")
    owner.send(owner.last_code("Email"))
    await owner.expect("Press Submit")
    owner.tap("Submit")
    await owner.expect("withdrawals stay locked until")
    account = await ada(bot)
    assert account.two_factor == "phone" and account.withdrawals_locked_until is not None  # type: ignore[attr-defined]


async def test_run_refuses_to_show_codes_in_the_chat_unless_told(
    server: BotApiServer, framework: str, tmp_path: Path
) -> None:
    process = BotProcess(server, framework, tmp_path, CODE_DELIVERY="")
    code, output = await process.run_once()
    assert code == 2 and output.strip().count("\n") == 0
    assert "SMS_WEBHOOK_URL and SMTP_HOST" in output and "CODE_DELIVERY=chat" in output
    half = BotProcess(server, framework, tmp_path, CODE_DELIVERY="", SMTP_HOST="127.0.0.1",
                      SMTP_FROM="desk@acme.test")
    code, output = await half.run_once()
    assert code == 2 and "SMS_WEBHOOK_URL not set" in output and "SMTP_HOST" not in output
    demo_with_mail = BotProcess(server, framework, tmp_path, CODE_DELIVERY="chat", SMTP_HOST="127.0.0.1",
                                SMTP_FROM="desk@acme.test")
    code, output = await demo_with_mail.run_once()  # the mailbox alone would pass Method 1
    assert code == 2 and "CODE_DELIVERY=chat with only SMTP_HOST set" in output
    assert not server.calls_of("getMe")  # refused before it spoke to Telegram


async def test_guessing_totp_from_many_chats_stops_at_the_account_limit(
    bot: BotProcess, server: BotApiServer
) -> None:
    guesses = 0
    for user_id in range(310, 313):  # three Telegram users, four wrong codes each
        guesser = TgUser(server, user_id)
        await walk_backup_key_to_the_code(guesser)
        for _ in range(4):
            guesser.send(other(totp_now(ADA_TOTP, datetime.now(UTC))))
            await guesser.expect(" left.")  # "3 tries left.", "1 try left."
            guesses += 1
    assert guesses == 12
    owner = TgUser(server, 319)  # even the right code is now refused, as for an unknown email
    await walk_backup_key_to_the_code(owner)
    owner.send(totp_now(ADA_TOTP, datetime.now(UTC)))
    await owner.expect("That code does not match")
