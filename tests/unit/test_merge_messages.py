"""Texts one event sends back to back go out as one message (flows.render.merge_messages), rule by rule."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from flows.render import MESSAGE_LIMIT, merge_messages, utf16_units
from flows.replies import (
    AnswerButton,
    Button,
    CopyMessage,
    DeleteMessage,
    EditMessage,
    Notify,
    Reply,
    SendCard,
    SendFiles,
    SendMessage,
    SendPhoto,
)
from tests.support.chat import Bot

CHAT, OTHER = 42, 43
KEYS = ((Button("Get new codes", "c:1:resend"),),)


def text(words: str, chat: int = CHAT, **flags: object) -> SendMessage:
    return SendMessage(chat, words, **flags)  # type: ignore[arg-type]


def sms(chat: int = CHAT) -> Notify:
    return Notify(chat, "sms", "+15551234534", "Your code", "Your code: 123456")


def test_two_texts_become_one_message_a_blank_line_apart() -> None:
    assert merge_messages([text("The code is right."), text("Now send me the email code.")]) == [
        text("The code is right.\n\nNow send me the email code.")]


def test_a_run_of_texts_becomes_one_message() -> None:
    assert merge_messages([text("a"), text("b"), text("c")]) == [text("a\n\nb\n\nc")]


def test_a_message_with_buttons_stays_apart_before_or_after() -> None:
    """A press edits its message back to its own prompt: text joined to it would be wiped."""
    replies: list[Reply] = [text("Pick one", buttons=KEYS), text("Or wait.")]
    assert merge_messages(replies) == replies
    replies = [text("The code is right."), text("Now send me the email code.", buttons=KEYS)]
    assert merge_messages(replies) == replies
    assert merge_messages([text("a"), text("b"), text("c", buttons=KEYS)]) == [text("a\n\nb"), text("c", buttons=KEYS)]


def test_sensitive_texts_stay_apart_and_part_what_is_around_them() -> None:
    code = text("📱 SMS to +1•••••34: 123456", sensitive=True)
    replies: list[Reply] = [text("We sent a code."), code, text("Send me the code.", buttons=KEYS)]
    assert merge_messages(replies) == replies
    assert merge_messages([code, code]) == [code, code]


def test_texts_that_delete_themselves_stay_apart() -> None:
    key = text("Your new key: ABCD", delete_after=600)
    replies: list[Reply] = [text("Approved."), key, text("Send me the code.")]
    assert merge_messages(replies) == replies


def test_media_cards_edits_and_answers_keep_the_texts_either_side_apart() -> None:
    for between in (SendPhoto(CHAT, "iVBORw0KGgo=", "a QR code"), SendFiles(CHAT, "photo", ("f1",)),
                    CopyMessage(CHAT, 900, 5), EditMessage(CHAT, 7, "Menu\n\nChosen: Continue"),
                    DeleteMessage(CHAT, 8), AnswerButton(CHAT, "cb1")):
        replies: list[Reply] = [text("before"), between, text("after")]
        assert merge_messages(replies) == replies, between


def test_a_card_is_not_a_plain_text() -> None:
    card = SendCard(CHAT, "Case 1", KEYS, "Case 1 (no buttons)", ())
    replies: list[Reply] = [text("before"), card, text("after")]
    assert merge_messages(replies) == replies


def test_an_sms_or_email_between_two_texts_does_not_part_them() -> None:
    """Whether a code also went by SMS (a real account) or not (a decoy) must not change what the chat gets."""
    known = merge_messages([text("SMS sent."), text("Email sent."), sms(), sms(), text("Send the code.")])
    unknown = merge_messages([text("SMS sent."), text("Email sent."), text("Send the code.")])
    assert [r for r in known if not isinstance(r, Notify)] == unknown == [
        text("SMS sent.\n\nEmail sent.\n\nSend the code.")]
    assert [r for r in known if isinstance(r, Notify)] == [sms(), sms()]


def test_texts_to_other_chats_neither_merge_nor_part_a_chat_s_texts() -> None:
    replies: list[Reply] = [text("to the user"), text("to staff", OTHER), text("again to the user")]
    assert merge_messages(replies) == [text("to the user\n\nagain to the user"), text("to staff", OTHER)]


def test_texts_that_differ_in_more_than_text_and_buttons_stay_apart() -> None:
    replies: list[Reply] = [text("a", chat=CHAT), text("b", chat=OTHER)]
    assert merge_messages(replies) == replies


def test_the_joined_text_stays_within_telegrams_limit() -> None:
    first = "x" * 2000
    fits = "y" * (MESSAGE_LIMIT - 2000 - 2)  # the blank line between counts: two units
    assert merge_messages([text(first), text(fits)]) == [text(f"{first}\n\n{fits}")]
    too_long = fits + "y"
    assert merge_messages([text(first), text(too_long)]) == [text(first), text(too_long)]


def test_the_limit_is_counted_in_utf16_units_an_emoji_counting_two() -> None:
    assert utf16_units("✅") == 1 and utf16_units("📱") == 2 and utf16_units("a📱b") == 4
    first = "📱" * 1000  # 1,000 characters, 2,000 units
    fits = "y" * (MESSAGE_LIMIT - 2000 - 2)
    assert len(merge_messages([text(first), text(fits)])) == 1
    over = "y" * (MESSAGE_LIMIT - 1000 - 2)  # would fit counted in characters, not in UTF-16 units
    assert merge_messages([text(first), text(over)]) == [text(first), text(over)]


def test_the_limit_counts_the_raw_html() -> None:
    first = "<b>" + "x" * 2000 + "</b>"
    rest = "y" * (MESSAGE_LIMIT - 2000 - 2)  # would fit without the tags
    assert len(merge_messages([text(first), text(rest)])) == 2


def test_a_cards_evidence_still_points_at_its_files_after_a_merge_before_it() -> None:
    files = SendFiles(OTHER, "photo", ("f1",), case_id="c1")
    card = SendCard(OTHER, "Case c1", KEYS, "Case c1 (no buttons)", (-2,))
    merged = merge_messages([text("a"), files, text("b"), card])
    assert merged == [text("a\n\nb"), files, SendCard(OTHER, "Case c1", KEYS, "Case c1 (no buttons)", (-1,))]


def test_nothing_to_merge_leaves_the_replies_as_they_are() -> None:
    assert merge_messages([]) == []
    replies: list[Reply] = [AnswerButton(CHAT, "cb"), EditMessage(CHAT, 3, "x"), text("y", buttons=KEYS)]
    assert merge_messages(replies) == replies


async def test_the_engine_merges_what_one_event_says(desk: Bot) -> None:
    chat = desk.chat()
    await chat.send("/start")
    await chat.tap("Switch to phone verification")
    assert await chat.send("not an email") == [
        "That does not look like an email address. Please send it like this: name@example.com\n\n"
        "Which email address is your Acme account registered with?"]


# -- properties -----------------------------------------------------------------------------------------------

words = st.text(alphabet=st.sampled_from("ab📱<>"), min_size=1, max_size=1500)
replies_strategy = st.lists(st.one_of(
    st.builds(SendMessage, st.sampled_from((CHAT, OTHER)), words,
              st.sampled_from(((), KEYS)), st.booleans(), st.sampled_from((None, 600))),
    st.builds(lambda chat: sms(chat), st.sampled_from((CHAT, OTHER))),
    st.builds(DeleteMessage, st.sampled_from((CHAT, OTHER)), st.integers(1, 9)),
), max_size=12)


@given(replies_strategy)
def test_merging_keeps_every_word_in_order_and_every_rule(replies: list[Reply]) -> None:
    merged = merge_messages(replies)
    for chat in (CHAT, OTHER):
        def said(seq: list[Reply], chat: int = chat) -> list[str]:
            return [r.text if isinstance(r, SendMessage) else repr(r) for r in seq
                    if r.chat_id == chat and not isinstance(r, Notify)]

        assert "\n\n".join(said(merged)) == "\n\n".join(said(replies))
    assert [r for r in merged if isinstance(r, Notify)] == [r for r in replies if isinstance(r, Notify)]
    originals = set(replies)
    for reply in merged:
        if reply in originals or not isinstance(reply, SendMessage):
            continue
        assert not reply.sensitive and reply.delete_after is None
        assert utf16_units(reply.text) <= MESSAGE_LIMIT
    assert len(merged) <= len(replies)
