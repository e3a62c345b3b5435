"""Staff review completes Method 2: the card, the decisions, re-enrolment, and who may do what."""

from __future__ import annotations

import asyncio
import re
from datetime import timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from flows import delivery
from flows.clock import FakeClock
from flows.directory import SecretBox
from flows.replies import DeleteMessage, Reply, SendFiles, SendMessage, SendPhoto
from flows.store import tables
from flows.store.database import SqlTx
from tests.support.chat import Bot, Chat, said
from tests.support.desk import (
    SECRET_KEY,
    photo,
    scan,
    submit_documents_for_review,
    submit_for_review,
    totp_now,
)

pytestmark = pytest.mark.both_backends  # the engine's guarantees must hold on either database

ADMIN, OTHER_ADMIN = 900, 901


async def submitted_case(desk: Bot, user: Chat, restore: str = "Authenticator app") -> str:
    await submit_for_review(user, restore=restore)
    async with desk.db.connect() as conn:
        query = select(tables.cases.c.id).where(tables.cases.c.status == "review")
        return str((await conn.execute(query)).scalar_one())


def card_for(desk: Bot, admin: int) -> SendMessage:
    cards = [r for r in desk.transport.log if isinstance(r, SendMessage) and r.chat_id == admin
             and "Review case" in r.text]
    return cards[-1]


async def ben(db: AsyncEngine) -> object:
    async with db.connect() as conn:
        return (await conn.execute(select(tables.accounts).where(tables.accounts.c.email == "ben@example.com"))).one()


async def test_a_submitted_case_posts_a_card_with_photos_to_every_admin(desk: Bot) -> None:
    case_id = await submitted_case(desk, desk.chat())
    for admin in (ADMIN, OTHER_ADMIN):
        card = card_for(desk, admin)
        assert f"Review case {case_id}" in re.sub("<[^>]+>", "", card.text)
        assert "ben@example.com" in card.text and "authenticator app" in card.text
        assert "phone code ✓" in card.text and "email code ✓" in card.text
        assert [b.label for row in card.buttons for b in row] == ["✅ Approve", "❌ Reject", "📎 Ask for more"]
        assert evidence_sent_to(desk, admin) == [("photo", ("selfie-1",))]


def evidence_sent_to(desk: Bot, chat_id: int) -> list[tuple[str, tuple[str, ...]]]:
    """The evidence the staff chat was sent: (photo or document, file ids), one entry per message or album."""
    return [(r.media, r.file_ids) for r in desk.transport.log if isinstance(r, SendFiles) and r.chat_id == chat_id]


def shown_in(desk: Bot, chat_id: int) -> list[str]:
    return [m.text for m in desk.transport.chats.get(chat_id, [])]


async def case_data(db: AsyncEngine, case_id: str) -> dict[str, object]:
    async with db.connect() as conn:
        return dict((await conn.execute(select(tables.cases.c.data).where(tables.cases.c.id == case_id))).scalar_one())


async def purges(db: AsyncEngine) -> list[tuple[str, str]]:
    async with db.connect() as conn:
        query = select(tables.audit.c.actor, tables.audit.c.subject).where(tables.audit.c.action == "documents.purged")
        return [(row.actor, row.subject) for row in await conn.execute(query)]


async def pass_time(desk: Bot, clock: FakeClock, **delta: float) -> None:
    clock.advance(**delta)
    await desk.runner.fire_due_timers()
    await desk.runner.settle()


async def test_a_verified_account_sends_its_one_selfie_as_a_photo_then_the_card(desk: Bot) -> None:
    case_id = await submitted_case(desk, desk.chat())
    assert evidence_sent_to(desk, ADMIN) == [("photo", ("selfie-1",))]
    assert shown_in(desk, ADMIN)[-2] == "[photo selfie-1]"
    assert shown_in(desk, ADMIN)[-1].startswith(f"🗂 Review case {case_id}")
    assert desk.chat(user_id=ADMIN).buttons == ["✅ Approve", "❌ Reject", "📎 Ask for more"]


async def test_an_image_sent_as_a_file_goes_to_staff_as_a_document(desk: Bot) -> None:
    await submit_for_review(desk.chat(), selfie=scan("selfie-file"))
    assert evidence_sent_to(desk, ADMIN) == [("document", ("selfie-file",))]
    assert desk.chat(user_id=ADMIN).buttons == ["✅ Approve", "❌ Reject", "📎 Ask for more"]


async def test_front_back_and_selfie_photos_go_as_one_album(desk: Bot) -> None:
    await submit_documents_for_review(desk.chat(), photo("front"), photo("back"), photo("selfie"))
    assert evidence_sent_to(desk, ADMIN) == [("photo", ("front", "back", "selfie"))]
    assert "Document: National ID card, Germany" in shown_in(desk, ADMIN)[-1]


async def test_photos_and_documents_go_as_separate_albums(desk: Bot) -> None:
    await submit_documents_for_review(desk.chat(), photo("front"), photo("back"), scan("selfie"))
    assert evidence_sent_to(desk, ADMIN) == [("photo", ("front", "back")), ("document", ("selfie",))]
    desk.transport.log.clear()
    await submit_documents_for_review(desk.chat(user_id=43), scan("front"), scan("back"), photo("selfie"))
    assert evidence_sent_to(desk, ADMIN) == [("photo", ("selfie",)), ("document", ("front", "back"))]
    assert desk.chat(user_id=ADMIN).buttons == ["✅ Approve", "❌ Reject", "📎 Ask for more"]


async def test_a_card_whose_evidence_failed_comes_without_buttons(desk: Bot) -> None:
    desk.transport.refuses = lambda files: files.chat_id == ADMIN  # e.g. a file id Telegram will not send here
    case_id = await submitted_case(desk, desk.chat())
    admin = desk.chat(user_id=ADMIN)
    assert admin.buttons == []
    assert f"The identity evidence could not be shown in this chat, so this card has no buttons. Send /case {case_id}" \
        in admin.last
    assert desk.chat(user_id=OTHER_ADMIN).buttons == ["✅ Approve", "❌ Reject", "📎 Ask for more"]

    said = await admin.press(f"r:{case_id}:1:approve")  # forged: the card had no buttons here
    assert said[0].startswith(f"Case {case_id} cannot be approved from here: its identity evidence has not reached")

    desk.transport.refuses = None
    await admin.send(f"/case {case_id}")
    assert evidence_sent_to(desk, ADMIN)[-1] == ("photo", ("selfie-1",))
    assert admin.buttons == ["✅ Approve", "❌ Reject", "📎 Ask for more"]
    assert (await admin.press(f"r:{case_id}:1:approve"))[0].startswith(f"✅ Case {case_id} approved")


async def test_the_buttons_stay_withheld_across_a_restart(desk: Bot, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(delivery, "MAX_BACKOFF", 0.01)
    deliver = desk.transport.deliver
    network_down = True
    card_attempts: list[SendMessage] = []
    retried = asyncio.Event()

    async def cards_fail(reply: Reply) -> delivery.Delivered:
        if isinstance(reply, SendMessage) and reply.chat_id == ADMIN and "Review case" in reply.text and network_down:
            card_attempts.append(reply)
            if len(card_attempts) > 1:  # the first attempt's group, with the failed evidence, was recorded
                retried.set()
            raise ConnectionResetError("the network is down when the card's turn comes")
        return await deliver(reply)

    desk.transport.refuses = lambda files: files.chat_id == ADMIN
    desk.transport.deliver = cards_fail  # type: ignore[method-assign]
    user = desk.chat()
    await submit_for_review(user, submit=False)
    submitting = asyncio.create_task(user.tap("Submit for review"))
    await asyncio.wait_for(retried.wait(), timeout=10)
    submitting.cancel()
    network_down = False
    desk.transport.refuses = None
    await desk.restart()
    assert desk.chat(user_id=ADMIN).buttons == []
    assert "could not be shown in this chat" in desk.chat(user_id=ADMIN).last


async def test_a_cancelled_case_forgets_its_documents_and_deletes_the_evidence(
    desk: Bot, db: AsyncEngine, clock: FakeClock
) -> None:
    user = desk.chat()
    case_id = await submitted_case(desk, user)
    assert "[photo selfie-1]" in shown_in(desk, ADMIN) and "[photo selfie-1]" in shown_in(desk, OTHER_ADMIN)
    await user.send("/cancel")
    assert (await case_data(db, case_id))["photo_selfie"] is None
    assert await purges(db) == [("system", f"case:{case_id}")]
    await pass_time(desk, clock, seconds=1)
    for admin in (ADMIN, OTHER_ADMIN):
        assert "[photo selfie-1]" not in shown_in(desk, admin)
        assert shown_in(desk, admin)[-1].startswith(f"🗂 Review case {case_id}")  # the card itself stays
    clock.advance(days=30)
    await desk.runner.fire_due_timers()
    assert len(await purges(db)) == 1


async def test_an_abandoned_case_forgets_its_documents_and_deletes_the_evidence(
    desk: Bot, db: AsyncEngine, clock: FakeClock
) -> None:
    user, admin = desk.chat(), desk.chat(user_id=ADMIN)
    case_id = await submitted_case(desk, user)
    await admin.press(f"r:{case_id}:1:more")  # back to the document step, with the old selfie still on file
    await pass_time(desk, clock, hours=25)
    assert user.last.startswith("Your recovery was closed after a day without activity.")
    async with db.connect() as conn:
        status = (await conn.execute(select(tables.cases.c.status).where(tables.cases.c.id == case_id))).scalar_one()
    assert status == "abandoned"
    assert (await case_data(db, case_id))["photo_selfie"] is None
    await pass_time(desk, clock, seconds=1)
    assert "[photo selfie-1]" not in shown_in(desk, ADMIN)


async def test_a_replaced_case_forgets_its_documents(desk: Bot, db: AsyncEngine) -> None:
    user = desk.chat()
    await submit_for_review(user, submit=False)
    async with db.connect() as conn:
        case_id = (await conn.execute(select(tables.cases.c.id).where(tables.cases.c.status == "open"))).scalar_one()
    await user.send("/start")
    await user.tap("Start over")
    assert (await case_data(db, case_id))["photo_selfie"] is None
    assert await purges(db) == [("system", f"case:{case_id}")]


async def test_approve_resets_locks_and_reenrols(desk: Bot, db: AsyncEngine, clock: FakeClock) -> None:
    user, admin = desk.chat(user_id=42), desk.chat(user_id=ADMIN)
    case_id = await submitted_case(desk, user)
    user.new_messages()
    await admin.press(f"r:{case_id}:1:approve")
    assert admin.last.startswith(f"✅ Case {case_id} approved")
    said = user.new_messages()
    assert said[0].startswith("✅ Good news: our staff approved your request.")
    assert "withdrawals are locked for 48 hours, until Jan 7, 2026 12:00 UTC" in said[0]
    assert said[-1].startswith("Add the new key to your authenticator app")
    [qr] = [r for r in desk.transport.log if isinstance(r, SendPhoto) and r.chat_id == 42]
    assert qr.sensitive and qr.png_base64
    [key_message] = [r for r in desk.transport.log if isinstance(r, SendMessage) and "type this key" in r.text]
    assert key_message.sensitive and key_message.delete_after == 600
    secret = re.search(r"<code>([A-Z2-7 ]+)</code>", key_message.text).group(1).replace(" ", "")  # type: ignore[union-attr]
    account = await ben(db)
    assert (account.two_factor, account.totp_secret_enc) == ("none", None)  # type: ignore[attr-defined]
    assert account.withdrawals_locked_until == clock.now() + timedelta(hours=48)  # type: ignore[attr-defined]

    assert (await user.send("123456"))[0].startswith("That code does not match the new key.")
    assert (await user.send(totp_now(secret, clock.now())))[0].startswith("✅ Your new authenticator works.")
    account = await ben(db)
    assert account.two_factor == "totp"  # type: ignore[attr-defined]
    assert SecretBox(SECRET_KEY).decrypt(account.totp_secret_enc) == secret  # type: ignore[attr-defined]
    async with db.connect() as conn:
        payloads = (await conn.execute(select(tables.outbox.c.payload))).scalars().all()
        assert not any(secret in str(p) or secret[:8] in str(p) for p in payloads)
        status = (await conn.execute(select(tables.cases.c.status).where(tables.cases.c.id == case_id))).scalar_one()
        assert status == "approved"
        actions = (await conn.execute(select(tables.audit.c.action, tables.audit.c.actor))).all()
        assert ("review.approved", f"staff:{ADMIN}") in actions

    secrets = [m.message_id for m in user.messages if "type this key" in m.text or "Scan this" in m.text]
    assert len(secrets) == 2  # the QR code and the key as text
    clock.advance(minutes=9)
    await desk.runner.fire_due_timers()
    assert not any(DeleteMessage(42, m) in desk.transport.log for m in secrets)
    clock.advance(minutes=1)
    await desk.runner.fire_due_timers()
    await desk.runner.settle()
    assert all(DeleteMessage(42, m) in desk.transport.log for m in secrets)
    assert not any("type this key" in m.text or "Scan this" in m.text for m in user.messages)
    clock.advance(hours=48)
    user.new_messages()
    await desk.runner.fire_due_timers()
    await desk.runner.settle()
    assert any("withdrawals are enabled again" in m for m in user.new_messages())


async def test_approving_an_email_restore_leaves_the_2fa_alone(desk: Bot, db: AsyncEngine) -> None:
    user, admin = desk.chat(user_id=42), desk.chat(user_id=ADMIN)
    case_id = await submitted_case(desk, user, restore="Email address")
    user.new_messages()
    await admin.press(f"r:{case_id}:1:approve")
    assert "email change requested" in admin.last
    told = said(user.new_messages())
    assert "support will contact you to change your email address" in told[0]
    assert told[-1] == "That is all from here. Sign in to Acme as usual."
    account = await ben(db)
    assert account.two_factor == "totp" and account.totp_secret_enc is not None  # type: ignore[attr-defined]
    assert account.withdrawals_locked_until is not None  # type: ignore[attr-defined]
    assert not [r for r in desk.transport.log if isinstance(r, SendPhoto) and r.chat_id == 42]  # no new key


async def test_approving_a_phone_restore_removes_the_phone_only(desk: Bot, db: AsyncEngine) -> None:
    user, admin = desk.chat(user_id=42), desk.chat(user_id=ADMIN)
    case_id = await submitted_case(desk, user, restore="Phone number")
    await admin.press(f"r:{case_id}:1:approve")
    account = await ben(db)
    assert account.phone is None and account.two_factor == "totp"  # type: ignore[attr-defined]
    assert "The phone number on file was removed" in user.paragraphs[-2]


async def test_two_admins_at_once_one_decision_wins(desk: Bot) -> None:
    first, second = desk.chat(user_id=ADMIN), desk.chat(user_id=OTHER_ADMIN)
    case_id = await submitted_case(desk, desk.chat())
    await asyncio.gather(first.press(f"r:{case_id}:1:approve"), second.press(f"r:{case_id}:1:rj_fraud"))
    texts = [first.last, second.last]
    assert sum(t.startswith(f"✅ Case {case_id} approved") for t in texts) == 1
    assert sum(f"was already decided (approved) by staff member {ADMIN}" in t for t in texts) == 1


async def test_reject_with_a_preset_or_a_typed_reason(desk: Bot) -> None:
    admin, user = desk.chat(user_id=ADMIN), desk.chat(user_id=42)
    case_id = await submitted_case(desk, user)
    await admin.press(f"r:{case_id}:1:reject")
    assert admin.buttons == ["The documents were unreadable or incomplete", "The details do not match the account",
                             "The request could not be verified as yours", "Type a reason…"]
    await admin.tap("Type a reason")
    assert admin.last == f"Send: /reject {case_id} your reason"
    await admin.send(f"/reject {case_id} The selfie does not show <the document>")
    assert user.last.startswith("We could not approve your recovery request. "
                                "Reason: The selfie does not show <the document>.")
    assert (await user.send("/status"))[0].startswith("You have no recovery in progress.")
    assert "already decided (rejected)" in (await admin.send(f"/reject {case_id} again"))[0]


async def test_ask_for_more_reopens_the_document_step(desk: Bot) -> None:
    admin, user = desk.chat(user_id=ADMIN), desk.chat(user_id=42)
    case_id = await submitted_case(desk, user)
    await admin.press(f"r:{case_id}:1:more")
    assert user.paragraphs[-2].startswith("Our staff need more from you")
    await user.tap("Next")
    from flows.events import FileInfo

    await user.send_file(FileInfo("selfie-2", "u-selfie-2", "photo", 1000))
    await user.tap("Submit for review")
    assert "waiting for review" in (await user.send("/status"))[0]
    assert "Review case" in card_for(desk, ADMIN).text
    assert (await admin.press(f"r:{case_id}:1:approve"))[0].startswith("This card is from an earlier submission")
    assert (await admin.press(f"r:{case_id}:2:approve"))[0].startswith(f"✅ Case {case_id} approved")


async def test_photos_of_an_earlier_round_do_not_reach_the_new_card(desk: Bot) -> None:
    from flows.events import FileInfo
    from flows.replies import SendFiles
    from tests.support.desk import code_in, request_codes

    admin, user = desk.chat(user_id=ADMIN), desk.chat(user_id=42)
    replies = await request_codes(user, "ada@example.com", "Authenticator app")
    await user.send(code_in(replies, "SMS"))
    await user.send(code_in(replies, "Email"))
    await user.tap("Send")
    await user.tap("Start answering questions")
    await user.send("Rex")
    for round_, id_type, slots in ((1, "National ID card", ("front", "back", "selfie")), (2, "Passport",
                                                                                        ("front", "selfie"))):
        await user.tap("Next")
        await user.send("germany")
        await user.tap(id_type)
        for slot in slots:
            await user.send_file(FileInfo(f"{slot}-{round_}", f"u-{slot}-{round_}", "photo", 1000))
        await user.tap("Submit for review")
        if round_ == 1:
            async with desk.db.connect() as conn:
                query = select(tables.cases.c.id).where(tables.cases.c.status == "review")
                case_id = str((await conn.execute(query)).scalar_one())
            await admin.press(f"r:{case_id}:1:more")
    albums = [r for r in desk.transport.log if isinstance(r, SendFiles) and r.chat_id == ADMIN]
    assert albums[-1].file_ids == ("front-2", "selfie-2")  # no back of the earlier ID card


async def test_non_admins_get_the_unknown_command_reply_and_are_audited(desk: Bot, db: AsyncEngine) -> None:
    mallory = desk.chat(user_id=666)
    case_id = await submitted_case(desk, desk.chat())
    for command in ("/queue", f"/case {case_id}", "/audit", f"/reject {case_id} no"):
        assert await mallory.send(command) == ["I don't know that command. Send /help to see what I can do."]
    assert await mallory.press(f"r:{case_id}:1:approve") == ["This button has expired."]
    async with db.connect() as conn:
        denied = (await conn.execute(select(tables.audit.c.actor).where(tables.audit.c.action == "admin.denied")))
        assert denied.scalars().all() == ["staff:666"] * 5
        status = (await conn.execute(select(tables.cases.c.status).where(tables.cases.c.id == case_id))).scalar_one()
        assert status == "review"


async def test_queue_case_and_audit_commands(desk: Bot, clock: FakeClock) -> None:
    admin = desk.chat(user_id=ADMIN)
    assert (await admin.send("/queue"))[0] == "No case is waiting for review."
    first = await submitted_case(desk, desk.chat(user_id=1))
    clock.advance(hours=2)
    await submit_for_review(desk.chat(user_id=2))
    [queue] = await admin.send("/queue")
    lines = queue.splitlines()
    assert lines[0] == "Waiting for review: 2 (oldest first)"
    assert lines[1].startswith(f"• {first} — waiting 2h")
    shown = await admin.send(f"/case {first}")
    assert "Review case" in shown[-1] and admin.buttons == ["✅ Approve", "❌ Reject", "📎 Ask for more"]
    assert (await admin.send("/case nope"))[0] == "There is no such case."
    await admin.press(f"r:{first}:1:approve")
    [audit] = await admin.send("/audit")
    assert f"staff:{ADMIN} · review.approved · case:{first}" in audit


async def test_document_references_are_forgotten_after_the_retention_period(
    desk: Bot, db: AsyncEngine, clock: FakeClock
) -> None:
    admin = desk.chat(user_id=ADMIN)
    case_id = await submitted_case(desk, desk.chat())
    await admin.press(f"r:{case_id}:1:rj_docs")
    clock.advance(days=30)
    await desk.runner.fire_due_timers()
    await desk.runner.settle()
    async with db.connect() as conn:
        data = (await conn.execute(select(tables.cases.c.data).where(tables.cases.c.id == case_id))).scalar_one()
    assert data["photo_selfie"] is None


async def test_stats_for_admins_as_text_and_a_chart(desk: Bot) -> None:
    import importlib.util

    admin = desk.chat(user_id=ADMIN)
    await submitted_case(desk, desk.chat())
    [report] = [m for m in await admin.send("/stats") if "Recovery statistics" in m]
    assert "Security Check Not Available: 1 started · 1 verified · 0 recovered" in report
    assert "Waiting for review: 1" in report
    charts = [r for r in desk.transport.log if isinstance(r, SendPhoto) and r.chat_id == ADMIN]
    assert len(charts) == (1 if importlib.util.find_spec("matplotlib") else 0)
    assert await desk.chat(user_id=5).send("/stats") == ["I don't know that command. Send /help to see what I can do."]


async def test_evidence_that_arrives_after_the_purge_is_deleted_at_once(db: AsyncEngine, clock: FakeClock) -> None:
    case_id = "A" * 12
    async with db.begin() as conn:  # the case was cancelled while its evidence was still on its way
        await SqlTx(conn).evidence.forget(case_id, clock.now())
        await SqlTx(conn).evidence.record([(case_id, ADMIN, (7, 8))], clock.now())
    async with db.connect() as conn:
        due = (await conn.execute(select(tables.timers.c.kind, tables.timers.c.payload))).all()
        kept = (await conn.execute(select(tables.evidence_messages.c.message_id))).scalars().all()
    assert due == [("delete_message", {"chat_id": ADMIN, "message_id": 7}),
                   ("delete_message", {"chat_id": ADMIN, "message_id": 8})]
    assert kept == [None]


# -- the pending authenticator secret leaves the case however the enrolment ends ------------------------------


async def enrolling(desk: Bot, db: AsyncEngine) -> tuple[Chat, str, str]:
    """A user at the enrol step after an approval: (their chat, the case id, the new secret)."""
    user, admin = desk.chat(user_id=42), desk.chat(user_id=ADMIN)
    case_id = await submitted_case(desk, user)
    await admin.press(f"r:{case_id}:1:approve")
    [key_message] = [r for r in desk.transport.log if isinstance(r, SendMessage) and "type this key" in r.text]
    secret = re.search(r"<code>([A-Z2-7 ]+)</code>", key_message.text).group(1).replace(" ", "")  # type: ignore[union-attr]
    assert (await case_data(db, case_id)).get("pending_totp_enc")  # kept, encrypted, while the code is awaited
    return user, case_id, secret


async def test_a_confirmed_enrolment_removes_the_pending_secret(desk: Bot, db: AsyncEngine,
                                                                 clock: FakeClock) -> None:
    user, case_id, secret = await enrolling(desk, db)
    assert (await user.send(totp_now(secret, clock.now())))[0].startswith("✅ Your new authenticator works.")
    assert "pending_totp_enc" not in await case_data(db, case_id)


async def test_too_many_wrong_codes_remove_the_pending_secret(desk: Bot, db: AsyncEngine) -> None:
    user, case_id, _ = await enrolling(desk, db)
    for _ in range(10):
        await user.send("123456")
    data = await case_data(db, case_id)
    assert "pending_totp_enc" not in data and data["enrol_wrong"] == 10


async def test_a_cancelled_enrolment_removes_the_pending_secret(desk: Bot, db: AsyncEngine) -> None:
    user, case_id, _ = await enrolling(desk, db)
    await user.send("/cancel")
    assert "pending_totp_enc" not in await case_data(db, case_id)


async def test_an_enrolment_abandoned_by_the_timer_removes_the_pending_secret(
        desk: Bot, db: AsyncEngine, clock: FakeClock) -> None:
    _, case_id, _ = await enrolling(desk, db)
    await pass_time(desk, clock, hours=25)
    async with db.connect() as conn:
        status = (await conn.execute(select(tables.cases.c.status).where(tables.cases.c.id == case_id))).scalar_one()
    assert status not in ("open", "review")
    assert "pending_totp_enc" not in await case_data(db, case_id)


async def test_an_enrolment_replaced_by_start_removes_the_pending_secret(desk: Bot, db: AsyncEngine) -> None:
    user, case_id, _ = await enrolling(desk, db)
    await user.send("/start")
    await user.tap("Start over")
    async with db.connect() as conn:
        status = (await conn.execute(select(tables.cases.c.status).where(tables.cases.c.id == case_id))).scalar_one()
    assert status == "replaced"
    assert "pending_totp_enc" not in await case_data(db, case_id)


async def test_nobody_reviews_their_own_request(desk: Bot) -> None:
    staff_member, other = desk.chat(user_id=ADMIN), desk.chat(user_id=OTHER_ADMIN)
    case_id = await submitted_case(desk, staff_member)
    for attempt in (f"r:{case_id}:1:approve", f"r:{case_id}:1:rj_docs"):
        await staff_member.press(attempt)
        assert "your own request: another member of staff must review it" in staff_member.last_message
    await staff_member.send(f"/reject {case_id} mine")
    assert "your own request" in staff_member.last_message
    async with desk.store.reading() as tx:
        assert (await tx.cases.by_id([case_id]))[case_id].status == "review"
    await other.press(f"r:{case_id}:1:approve")
    assert other.last.startswith(f"✅ Case {case_id} approved")
