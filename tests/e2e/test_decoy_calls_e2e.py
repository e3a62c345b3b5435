"""No enumeration through the Bot API: with codes going by SMS and email, Method 1's Get Code makes the same
Telegram calls, in number and in shape, for an account's email and for an unknown one."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from tests.support.botapi import BotApiServer, Call
from tests.support.e2e import BotProcess, TgUser, greet, prepare_database
from tests.support.servers import Mailbox, SmsGateway

IDS = {"chat_id", "message_id", "callback_query_id"}
CASE_ID = re.compile(r"[A-Za-z0-9_-]{12}(?=:\d+:)")  # in button data: case:turn:choice


def shape(call: Call) -> tuple[str, tuple[tuple[str, Any], ...]]:
    """A call without the ids that differ from chat to chat (the chat's, the message's, the case's)."""
    return call.method, tuple(sorted((k, CASE_ID.sub("CASE", str(v))) for k, v in call.params.items()
                                     if k not in IDS))


async def test_get_code_calls_are_the_same_for_a_known_and_an_unknown_email(
    server: BotApiServer, framework: str, tmp_path: Path, mailbox: Mailbox, gateway: SmsGateway
) -> None:
    process = BotProcess(server, framework, tmp_path, CODE_DELIVERY="", SMTP_HOST="127.0.0.1",
                         SMTP_PORT=str(mailbox.port), SMTP_FROM="desk@acme.test", SMTP_SECURITY="none",
                         SMS_WEBHOOK_URL=await gateway.start())
    await prepare_database(process.database_url)
    await process.start()
    try:
        shapes = []
        for user_id, email in ((111, "ada@example.com"), (112, "nobody@example.com")):
            user = TgUser(server, user_id)
            await greet(user)
            user.tap("Switch to phone verification")
            await user.expect("Which email address")
            user.send(email)
            await user.expect("Press Get Code")
            user.tap("Get Code")
            await user.expect("Send me the 6-digit code from the SMS")
            await user.idle()
            mine = [c for c in server.calls[user.mark:] if c.method != "getUpdates"]
            shapes.append([shape(c) for c in mine])
        assert shapes[0] == shapes[1]
        assert [method for method, _ in shapes[0]] == ["answerCallbackQuery", "editMessageText", "sendMessage",
                                                        "sendMessage"]
        assert len(gateway.received) == 1 and len(mailbox.received) == 1  # only Ada's codes went out
    finally:
        assert await process.stop() == 0, process.log.read_text()[-3000:]
