"""The anti-phishing guard: secrets nobody asked for are deleted and answered with a warning."""

from __future__ import annotations

import pytest

from flows.events import TextReceived
from flows.guard import secret_kind
from flows.replies import DeleteMessage
from tests.support.chat import Bot


@pytest.mark.parametrize(
    ("message", "expecting", "kind"),
    [
        ("JBSWY3DPEHPK3PXP", None, "key"),
        ("jbsw y3dp ehpk 3pxp", "email", "key"),
        ("JBSW-Y3DP-EHPK-3PXP-JBSW-Y3DP-EHPK-3PXP", "code", "key"),
        ("123456", None, "code"),
        ("123 456", "email", "code"),
        ("１２３４５６", "country", "code"),
        ("123456", "code", None),
        ("Hunter2!xyz", "email", "password"),
        ("Hunter2!xyz", "answer", None),
        ("ada@example.com", "email", None),
        ("Germany", "country", None),
        ("My first pet was Rex", "answer", None),
        ("ABCDEFGHIJKLMNOPQRST", None, None),  # letters only: a word, not a key
        ("12345", None, None),
    ],
)
def test_what_counts_as_a_secret(message: str, expecting: str | None, kind: str | None) -> None:
    assert secret_kind(message, expecting) == kind


async def test_a_backup_key_sent_at_the_email_step_is_deleted_and_warned_about(desk: Bot) -> None:
    chat = desk.chat()
    await chat.send("/start")
    await chat.tap("Reset with my backup key")
    async with desk.store.reading() as tx:
        before = await tx.cases.active([chat.sender.chat_id])
    await desk.runner.handle(TextReceived("guard-1", chat.sender, "JBSW Y3DP EHPK 3PXP", message_id=555))
    await desk.runner.settle()
    assert DeleteMessage(chat.sender.chat_id, 555) in desk.transport.log
    assert chat.last.startswith("⚠️ That looks like an authenticator backup key.")
    assert "Acme staff and this bot will never ask for it" in chat.last
    async with desk.store.reading() as tx:
        assert await tx.cases.active([chat.sender.chat_id]) == before


async def test_a_code_is_welcome_where_a_code_was_asked_for(desk: Bot) -> None:
    chat = desk.chat()
    await chat.send("/start")
    assert (await chat.send("123456"))[0].startswith("⚠️ That looks like a verification code")
    await chat.tap("Switch to phone verification")
    await chat.send("ada@example.com")
    await chat.tap("Get Code")
    assert not (await chat.send("000000"))[0].startswith("⚠️")


async def test_a_password_without_a_case_is_warned_about(desk: Bot) -> None:
    chat = desk.chat()
    assert (await chat.send("Tr0ub4dor&3"))[0].startswith("⚠️ That looks like a password.")
