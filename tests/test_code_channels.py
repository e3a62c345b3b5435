"""Codes sent outside the chat: email through a real local SMTP server, SMS through a real local webhook."""

from __future__ import annotations

import re

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from flows.replies import Reply
from flows.store import tables
from tests.support.chat import Bot, said
from tests.support.desk import begin, code_in, request_codes
from tests.support.servers import Mailbox, SmsGateway, mailed_code


async def test_method_two_with_codes_by_sms_and_email(
    desk_with_channels: Bot, mailbox: Mailbox, gateway: SmsGateway, db: AsyncEngine
) -> None:
    chat = desk_with_channels.chat()
    replies = await request_codes(chat, "ada@example.com", "Authenticator app")
    assert not any(re.search(r"\d{6}", reply) for reply in replies)  # no code in the chat
    [sms] = gateway.received
    assert sms["to"] == "+15551234534" and sms["auth"] == "Bearer gateway-token"
    sms_code = re.search(r"code: (\d{6})", sms["message"])
    assert sms_code is not None and "Never share it" in sms["message"]
    message = mailbox.only_message()
    assert message["To"] == "ada@example.com" and message["Subject"] == "Your Acme verification code"
    assert (await chat.send(sms_code.group(1))) == ["Now send me the code from the email."]
    assert (await chat.send(mailed_code(mailbox))) == ["Both codes are right. Press Send to continue."]
    async with db.connect() as conn:
        payloads = (await conn.execute(select(tables.outbox.c.payload))).scalars().all()
    assert not any(sms_code.group(1) in str(p) or mailed_code(mailbox) in str(p) for p in payloads)


async def test_unknown_email_sends_nothing_anywhere(
    desk_with_channels: Bot, mailbox: Mailbox, gateway: SmsGateway
) -> None:
    known, unknown = desk_with_channels.chat(user_id=1), desk_with_channels.chat(user_id=2)
    for chat, email in ((known, "ada@example.com"), (unknown, "nobody@example.com")):
        await chat.send("/start")
        await chat.tap("Switch to phone verification")
        await chat.send(email)
    assert await known.tap("Get Code") == await unknown.tap("Get Code")
    assert [sms["to"] for sms in gateway.received] == ["+15551234534"]  # Ada's only
    assert [envelope.rcpt_tos for envelope in mailbox.received] == [["ada@example.com"]]


def telegram_shape(reply: Reply) -> tuple[object, ...]:
    """What Telegram sees of a reply, without the chat, message and callback ids (which differ per chat)."""
    labels = tuple(b.label for row in getattr(reply, "buttons", ()) for b in row)
    return type(reply).__name__, getattr(reply, "text", None), labels, getattr(reply, "sensitive", None)


async def test_get_code_makes_the_same_telegram_calls_for_a_known_and_an_unknown_email(
    desk_with_channels: Bot, mailbox: Mailbox, gateway: SmsGateway
) -> None:
    """A real account's codes go by SMS and email, an unknown email's decoys nowhere: the chat must not tell
    them apart, not even by how many messages it gets (texts are merged across the SMS and email notices)."""
    desk = desk_with_channels
    known, unknown = desk.chat(user_id=1), desk.chat(user_id=2)
    shapes = []
    for chat, email in ((known, "ada@example.com"), (unknown, "nobody@example.com")):
        await begin(chat, "Switch to phone verification", email)
        mark = len(desk.transport.log)
        await chat.tap("Get Code")
        shapes.append([telegram_shape(r) for r in desk.transport.log[mark:]])
    assert shapes[0] == shapes[1]
    assert [kind for kind, *_ in shapes[0]] == ["AnswerButton", "EditMessage", "SendMessage", "SendMessage"]
    assert len(gateway.received) == 1 and len(mailbox.received) == 1  # Ada's codes did go out


async def test_an_approved_reset_is_also_announced_by_email(
    desk_with_channels: Bot, mailbox: Mailbox, gateway: SmsGateway, db: AsyncEngine
) -> None:
    from flows.events import FileInfo

    chat = desk_with_channels.chat()
    await request_codes(chat, "ben@example.com", "Authenticator app")
    sms_code = re.search(r"code: (\d{6})", gateway.received[-1]["message"])
    assert sms_code is not None
    await chat.send(sms_code.group(1))
    await chat.send(mailed_code(mailbox))
    await chat.tap("Send")
    await chat.tap("Next")
    await chat.send_file(FileInfo("s1", "us1", "photo", 100))
    await chat.tap("Submit for review")
    async with db.connect() as conn:
        case_id = (await conn.execute(select(tables.cases.c.id).where(tables.cases.c.status == "review"))).scalar_one()
    await desk_with_channels.chat(user_id=900).press(f"r:{case_id}:1:approve")
    await desk_with_channels.runner.settle()
    notice = mailbox.received[-1]
    import email
    import email.policy

    parsed = email.message_from_bytes(notice.content, policy=email.policy.default)  # type: ignore[arg-type]
    assert parsed["To"] == "ben@example.com"
    assert parsed["Subject"] == "The security settings of your Acme account were changed"
    assert "withdrawals are locked until Jan 7, 2026 12:00 UTC" in parsed.get_content()  # type: ignore[union-attr]


async def test_the_owner_is_emailed_when_the_account_switches(
    desk_with_channels: Bot, mailbox: Mailbox, gateway: SmsGateway
) -> None:
    chat = desk_with_channels.chat()
    await begin(chat, "Switch to phone verification", "ada@example.com")
    await chat.tap("Get Code")
    await chat.send(gateway.received[-1]["message"].split("code: ")[1][:6])
    await chat.send(mailed_code(mailbox))
    [switched, _] = said(await chat.tap("Submit"))
    assert switched.endswith("We have also told the email address on file about this change.")
    notice = mailbox.message(-1)
    assert notice["To"] == "ada@example.com" and notice["Subject"] == "Your Acme account now uses phone verification"
    assert "If this was not you, contact Acme support at once" in notice.get_content()


async def test_a_delivered_code_does_not_stay_in_the_outbox(desk: Bot, db: AsyncEngine) -> None:
    chat = desk.chat()
    await begin(chat, "Switch to phone verification", "ada@example.com")
    code = code_in(await chat.tap("Get Code"))
    async with db.connect() as conn:
        payloads = (await conn.execute(select(tables.outbox.c.payload))).scalars().all()
    assert payloads and not any(code in str(payload) for payload in payloads)
