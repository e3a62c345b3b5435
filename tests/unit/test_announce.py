"""Staff broadcasts from the chat: preview, audience, send, cancel, copies, and who may do it."""

from __future__ import annotations

from flows.events import CommandReceived
from flows.replies import CopyMessage, SendMessage
from tests.support.chat import Bot
from tests.support.desk import begin

ADMIN = 900


async def users(desk: Bot) -> None:
    """Three users who wrote to the bot; one of them has an open case."""
    for user_id in (1, 2):
        await desk.chat(user_id=user_id).send("/help")
    await begin(desk.chat(user_id=3), "Reset with my backup key", "ada@example.com")


async def test_broadcast_preview_audience_send_and_report(desk: Bot) -> None:
    await users(desk)
    admin = desk.chat(user_id=ADMIN)
    [preview] = await admin.send("/broadcast Maintenance tonight <b>22:00</b>")
    assert "Broadcast #1 — preview" in preview and "Maintenance tonight <b>22:00</b>" in preview
    assert "everyone who has not blocked the bot — 4 people" in preview  # the admin wrote too
    assert admin.buttons == ["📣 Send", "✖ Cancel", "Everyone", "Open cases only"]
    [narrower] = await admin.tap("Open cases only")
    assert "users with an open case — 1 person" in narrower
    await admin.tap("📣 Send")
    await desk.runner.settle()
    await desk.broadcasts.join(1)
    await desk.runner.settle()
    sent = [r for r in desk.transport.log if isinstance(r, SendMessage) and "Maintenance tonight" in r.text
            and r.chat_id != ADMIN]
    assert [r.chat_id for r in sent] == [3]
    assert sent[0].text == "Maintenance tonight &lt;b&gt;22:00&lt;/b&gt;"  # typed tags are text, not markup
    reports = [r.text for r in desk.transport.log if isinstance(r, SendMessage) and r.chat_id == ADMIN
               and "Broadcast #1 finished" in r.text]
    assert reports and "Recipients: 1" in reports[0] and "Sent: 1" in reports[0]


async def test_broadcast_a_copy_of_the_replied_message(desk: Bot) -> None:
    await users(desk)
    admin = desk.chat(user_id=ADMIN)
    await desk.runner.handle(CommandReceived("k-copy", admin.sender, "broadcast", "", 77, reply_to=55))
    await desk.runner.settle()
    assert "a copy of the message you replied to" in admin.last_message
    await admin.tap("📣 Send")
    await desk.runner.settle()
    await desk.broadcasts.join(1)
    copies = [r for r in desk.transport.log if isinstance(r, CopyMessage)]
    assert {(r.chat_id, r.from_chat_id, r.message_id) for r in copies} == {
        (chat, ADMIN, 55) for chat in (1, 2, 3, ADMIN)}


async def test_drop_a_draft_and_nothing_is_sent(desk: Bot) -> None:
    await users(desk)
    admin = desk.chat(user_id=ADMIN)
    await admin.send("/broadcast Hello")
    _, send = admin.button("📣 Send")
    assert (await admin.tap("✖ Cancel")) == ["Broadcast #1 was dropped; nothing was sent."]
    assert (await admin.press(send.data)) == ["Broadcast #1 is no longer a draft."]
    assert not any(isinstance(r, SendMessage) and r.text == "Hello" for r in desk.transport.log)
    assert (await admin.send("/broadcast_cancel")) == ["No broadcast is running."]


async def test_broadcast_usage_and_authorisation(desk: Bot) -> None:
    admin, someone = desk.chat(user_id=ADMIN), desk.chat(user_id=5)
    assert (await admin.send("/broadcast"))[0].startswith("Send /broadcast your text")
    unknown = ["I don't know that command. Send /help to see what I can do."]
    assert await someone.send("/broadcast Free money!") == unknown
    await admin.send("/broadcast Hello")
    _, send = admin.button("📣 Send")
    assert await someone.press(send.data) == ["This button has expired."]


async def test_send_while_another_broadcast_runs_tells_the_admin_and_starts_nothing(desk: Bot) -> None:
    await users(desk)
    admin = desk.chat(user_id=ADMIN)
    async with desk.store.transaction() as tx:  # another broadcast is running (from another admin, say)
        other = await tx.broadcasts.create(desk.clock.now(), ADMIN, "all", None, text="Earlier", copy_from=None)
        assert await tx.broadcasts.start(other, ADMIN, 1, desk.clock.now()) == 3
    await admin.send("/broadcast Maintenance tonight")
    replies = await admin.tap("📣 Send")
    assert len(replies) == 1
    assert "Broadcast #2 was not started: broadcast #1 is still running (0%, 0 of 3 done)" in replies[0]
    async with desk.store.reading() as tx:
        view = await tx.broadcasts.get(2)
    assert view is not None and view.status == "draft"


async def test_the_admins_own_formatting_goes_out_and_the_preview_shows_it_as_sent(desk: Bot) -> None:
    await users(desk)
    admin = desk.chat(user_id=ADMIN)
    event = CommandReceived("f1", admin.sender, "broadcast", "Fees < 1% from today",
                            args_html="Fees &lt; 1% from <b>today</b>")
    await desk.feed(admin, event)
    [preview] = [r for r in desk.transport.log if isinstance(r, SendMessage) and "preview" in r.text]
    assert "Fees &lt; 1% from <b>today</b>" in preview.text
    await admin.tap("📣 Send")
    await desk.runner.settle()
    await desk.broadcasts.join(1)
    await desk.runner.settle()
    sent = [r for r in desk.transport.log if isinstance(r, SendMessage) and "Fees" in r.text and r.chat_id != ADMIN]
    assert sorted(r.chat_id for r in sent) == [1, 2, 3] and {r.text for r in sent} == {"Fees &lt; 1% from <b>today</b>"}
