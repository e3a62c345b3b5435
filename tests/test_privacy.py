"""/privacy tells what is kept and why; /mydata hands the user a JSON copy of their requests, with nothing secret
in it and nothing that tells whether an email has an account."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from flows.replies import SendDocument
from tests.support.chat import Bot, Chat
from tests.support.desk import begin
from tests.test_review import enrolling, submitted_case

pytestmark = pytest.mark.both_backends


async def my_data(desk: Bot, user: Chat) -> dict[str, Any]:
    await user.send("/mydata")
    [document] = [r for r in desk.transport.log if isinstance(r, SendDocument) and r.chat_id == user.sender.chat_id]
    assert document.filename == "my-data.json" and document.sensitive
    return dict(json.loads(base64.b64decode(document.content_base64)))


async def test_privacy_says_what_is_kept_why_and_for_how_long(desk: Bot) -> None:
    [notice] = await desk.chat().send("/privacy")
    assert "What this desk keeps about you" in notice and "30 days after staff decide" in notice
    assert "48 hours" in notice and "/mydata" in notice


async def test_my_data_has_my_requests_and_no_secret(desk: Bot, db: Any) -> None:
    user, case_id, secret = await enrolling(desk, db)
    export = await my_data(desk, user)
    assert export["telegram_user_id"] == 42
    [case] = export["cases"]
    assert (case["case"], case["method"], case["step"], case["decision"]) == (case_id, "reverify", "enrol", "approved")
    assert case["email"] == "ben@example.com" and case["identity_photos_sent"] == 1
    dumped = json.dumps(export)
    assert secret not in dumped and "pending_totp" not in dumped and "account_id" not in dumped
    assert "Your data at the Acme recovery desk: 1 request." in user.messages[-1].text


async def test_my_data_does_not_tell_whether_an_email_has_an_account(desk: Bot) -> None:
    exports = []
    for user_id, email in ((1, "ada@example.com"), (2, "nobody@example.com")):
        chat = desk.chat(user_id=user_id)
        await begin(chat, "Switch to phone verification", email)
        await chat.tap("Get Code")
        exports.append(await my_data(desk, chat))
    known, unknown = ([{k: v for k, v in c.items() if k not in ("case", "email", "opened_at", "updated_at")}
                       for c in export["cases"]] for export in exports)
    assert known == unknown


async def test_delete_asks_then_erases_my_requests_and_keeps_the_audit(desk: Bot, db: Any) -> None:
    user = desk.chat(user_id=42)
    await begin(user, "Switch to phone verification", "ada@example.com")
    assert (await user.send("/delete"))[0].startswith("You have a recovery in progress")
    await user.send("/cancel")
    await user.tap("Yes, cancel it")
    assert (await user.send("/delete"))[0].startswith("Erase what this desk keeps about you")
    await user.tap("No, keep it")
    assert (await my_data(desk, user))["cases"]
    await user.send("/delete")
    await user.tap("Yes, erase it")
    assert user.messages[-1].text.startswith("Done: your requests")
    desk.transport.log.clear()
    assert (await my_data(desk, user))["cases"] == []
    async with desk.store.reading() as tx:
        actions = [(line.action, line.subject) for line in await tx.audit.recent(50)]
    assert ("privacy.erased", "user:42") in actions  # the log of what was done stays, the erasure included
    assert any(action == "case.opened" for action, _ in actions)


async def test_nobody_can_erase_someone_elses_data(desk: Bot) -> None:
    victim, other = desk.chat(user_id=42), desk.chat(user_id=43)
    await victim.send("/help")
    await other.press("p:42:erase")
    assert other.last_answer == "" and "expired" in other.messages[-1].text
    async with desk.store.reading() as tx:
        assert await tx.users.known([42]) == {42}


async def test_an_erased_users_photos_leave_the_staff_chat(desk: Bot, db: Any) -> None:
    user, admin = desk.chat(user_id=42), desk.chat(user_id=900)
    case_id = await submitted_case(desk, user)
    await admin.send(f"/reject {case_id} blurred")
    await user.send("/delete")
    await user.tap("Yes, erase it")
    async with desk.store.reading() as tx:
        deletions = [t for t in await tx.timers.due(desk.clock.now(), 100) if t.kind == "delete_message"]
    assert {t.chat_id for t in deletions} >= {900, 901}
