"""The three methods, staff review and /status in every language: a user whose Telegram is in Russian (or
Spanish, or Vietnamese) is written to in it from the first message, staff decisions and timers reach them in it,
and staff read their own. The walks are written with the English labels; each is tapped as the user's language
shows it."""

from __future__ import annotations

import re
from functools import cache

import pytest

from flows.clock import FakeClock
from flows.durations import format_duration
from flows.events import FileInfo
from flows.replies import SendMessage
from flows.texts import DEFAULT_LANGUAGE, known_keys, languages, plain_text, template, translate
from tests.support.chat import Bot, Chat
from tests.support.desk import ADA_TOTP, totp_now

pytestmark = pytest.mark.parametrize("language", sorted(languages()))
ADMIN = 900


@cache
def english_labels() -> dict[str, str]:
    """English text (as shown) → its catalog key."""
    found: dict[str, str] = {}
    for key in sorted(known_keys()):
        found.setdefault(plain_text(template(key)).replace("{service}", "Acme").replace("{mark} ", ""), key)
    return found


def shown(english: str, language: str) -> str:
    """What the user sees, in their language, where an English user sees `english`."""
    return plain_text(translate(english_labels()[english], language, service="Acme", mark="")).strip()


def says(key: str, language: str, **params: object) -> str:
    return plain_text(translate(key, language, service="Acme", **params))


async def tap(chat: Chat, english: str, language: str) -> list[str]:
    return await chat.tap(shown(english, language))


def codes(desk: Bot, chat_id: int) -> tuple[str, str]:
    """The SMS and email codes the chat channel showed last (a masked phone has "+", a masked email "@")."""
    shown_codes = [r.text for r in desk.transport.log if isinstance(r, SendMessage) and r.chat_id == chat_id
                   and r.sensitive and re.search(r"\b\d{6}\b", r.text)]
    phone = next(t for t in reversed(shown_codes) if "+" in t)
    email = next(t for t in reversed(shown_codes) if "@" in t)
    return tuple(re.findall(r"\b(\d{6})\b", t)[-1] for t in (phone, email))  # type: ignore[return-value]


def person(desk: Bot, user_id: int, language: str) -> Chat:
    return desk.chat(user_id=user_id, language=language)


async def test_a_new_user_is_greeted_in_their_apps_language(desk: Bot, language: str) -> None:
    chat = person(desk, 42, language)
    [greeting] = await chat.send("/start")
    assert greeting == says("desk.greeting", language)
    methods = ("Switch to phone verification", "Security Check Not Available", "Reset with my backup key")
    assert chat.buttons == [shown(label, language) for label in methods]


async def test_method_one_in_the_users_language(desk: Bot, language: str, clock: FakeClock) -> None:
    chat = person(desk, 42, language)
    await chat.send("/start")
    await tap(chat, "Switch to phone verification", language)
    await chat.send("ada@example.com")
    await tap(chat, "Get Code", language)
    sms, email = codes(desk, 42)
    assert "2" in (await chat.send("/status"))[0]  # "Step 2 of 3", in words of the language
    await chat.send(sms)
    await chat.send(email)
    await tap(chat, "Submit", language)
    assert chat.last.startswith(says("phone.done", language)[:20])


async def test_method_three_in_the_users_language(desk: Bot, language: str, clock: FakeClock) -> None:
    chat = person(desk, 42, language)
    await chat.send("/start")
    await tap(chat, "Reset with my backup key", language)
    await chat.send("ada@example.com")
    await tap(chat, "The app is installed", language)
    await tap(chat, "I added it", language)
    wrong = await chat.send("12345")  # not 6 digits: said so, in the language, and no try used
    assert wrong[0] == says("backup.not_a_code", language)
    done = await chat.send(totp_now(ADA_TOTP, clock.now()))
    assert done[0].startswith(says("backup.done", language)[:20])


async def submit_method_two(desk: Bot, user: Chat, language: str) -> None:
    """Method 2 for Ben, from /start to "Submit for review", tapped as `language` shows it."""
    await user.send("/start")
    await tap(user, "Security Check Not Available", language)
    await tap(user, "Continue", language)
    await user.send("ben@example.com")
    await tap(user, "Authenticator app", language)
    await tap(user, "Confirm Restore", language)
    await tap(user, "Get Code", language)
    sms, email = codes(desk, user.sender.user_id)
    await user.send(sms)
    await user.send(email)
    await tap(user, "Send", language)
    await tap(user, "Next", language)
    await user.send_file(FileInfo("selfie-1", "u-selfie-1", "photo", 1000))
    await tap(user, "Submit for review", language)


async def test_method_two_and_the_staff_review_each_in_their_own_language(desk: Bot, language: str,
                                                                           clock: FakeClock) -> None:
    user, admin = person(desk, 42, language), person(desk, ADMIN, DEFAULT_LANGUAGE)
    await submit_method_two(desk, user, language)
    status = (await user.send("/status"))[0]
    assert "6" in status and "7" in status  # "Step 6 of 7: the review by our staff", in the language
    card = [r.text for r in desk.transport.log if isinstance(r, SendMessage) and r.chat_id == ADMIN][-1]
    assert "Review case" in plain_text(card)  # staff read their own language
    await admin.tap("Approve")
    said = "\n".join(user.new_messages())
    assert says("enrol.scan", language) in said and says("enrol.qr_caption", language) in said
    clock.advance(minutes=1)
    assert says("review.approved_staff", DEFAULT_LANGUAGE, case="", changes="").split()[0] in admin.last_message


async def test_staff_read_the_review_card_in_their_own_language(desk: Bot, language: str) -> None:
    admin, user = person(desk, ADMIN, language), person(desk, 42, DEFAULT_LANGUAGE)
    await admin.send("/help")  # the desk learns the staff member's language from their messages
    await submit_method_two(desk, user, DEFAULT_LANGUAGE)
    card = plain_text([r.text for r in desk.transport.log if isinstance(r, SendMessage) and r.chat_id == ADMIN][-1])
    heading = plain_text(template("review.card", language)).split("{case}")[0].strip()
    assert card.startswith(heading)
    assert format_duration(0, language) in card  # how long it has waited, in their units
    assert ("Review case" in card) == (language == DEFAULT_LANGUAGE)


async def test_a_timer_reaches_the_user_in_their_language(desk: Bot, language: str, clock: FakeClock) -> None:
    chat = person(desk, 42, language)
    await chat.send("/start")
    await tap(chat, "Switch to phone verification", language)
    await chat.send("ada@example.com")
    await tap(chat, "Get Code", language)
    clock.advance(minutes=26)
    await desk.runner.fire_due_timers()
    await desk.runner.settle()
    reminder = user_texts(desk, 42)[-1]
    assert reminder.startswith(says("codes.reminder", language, time="")[:12])


async def test_a_language_chosen_with_the_command_wins(desk: Bot, language: str) -> None:
    chat = person(desk, 42, "de")  # an app in a language without a catalog: English until a choice
    assert (await chat.send("/start"))[0] == says("desk.greeting", DEFAULT_LANGUAGE)
    await chat.send("/language")
    assert chat.buttons[0] == "English" and len(chat.buttons) == len(languages())
    await chat.tap(says(f"language.name_{language}", language))
    assert chat.messages[-1].text == says("language.chosen", language)
    assert (await chat.send("/help"))[0] == says("desk.help", language)


def user_texts(desk: Bot, chat_id: int) -> list[str]:
    return [plain_text(r.text) for r in desk.transport.log if isinstance(r, SendMessage) and r.chat_id == chat_id]


async def test_buttons_do_the_same_in_every_language(desk: Bot, language: str) -> None:
    def pressed(chat: Chat) -> list[str]:  # the choice each button makes (its data, but for the case and turn)
        return [button.data.rsplit(":", 1)[-1] for row in chat.messages[-1].buttons for button in row]

    english, theirs = person(desk, 41, DEFAULT_LANGUAGE), person(desk, 42, language)
    for chat in (english, theirs):
        await chat.send("/start")
        await tap(chat, "Security Check Not Available", chat.sender.language or DEFAULT_LANGUAGE)
    assert pressed(theirs) == pressed(english)
    assert [b.data for row in theirs.messages[-1].buttons for b in row] != []
