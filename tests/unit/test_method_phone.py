"""Method 1 — Switch to phone verification, as a user lives it, and as a SIM-swapper tries it."""

from __future__ import annotations

from datetime import timedelta

from flows.clock import FakeClock
from flows.moments import moment
from tests.support.chat import Bot, Chat, said
from tests.support.desk import account, begin, code_in

METHOD = "Switch to phone verification"


def wrong(code: str) -> str:
    return f"{(int(code) + 1) % 1_000_000:06d}"


async def both_codes(chat: Chat, email: str = "ada@example.com") -> tuple[str, str]:
    """Method 1 up to the codes; returns (SMS code, email code) as the chat channel showed them."""
    await begin(chat, METHOD, email)
    replies = await chat.tap("Get Code")
    return code_in(replies, "SMS"), code_in(replies, "Email")


async def test_start_greets_warns_and_offers_three_methods(desk: Bot) -> None:
    chat = desk.chat()
    [greeting] = await chat.send("/start")
    assert "Acme account recovery desk" in greeting
    assert "never asks for your password, a 2FA code or your backup key" in greeting
    assert chat.buttons == [METHOD, "Security Check Not Available", "Reset with my backup key"]


async def test_happy_path_needs_the_sms_and_the_email_code(desk: Bot, clock: FakeClock) -> None:
    chat = desk.chat()
    assert await begin(chat, METHOD, "Ada@Example.com ") == [
        "Press Get Code and we will send a 6-digit code by SMS to the phone number on file and another one to "
        "the email address on file."]
    replies = await chat.tap("Get Code")  # a code shown in the chat is a message of its own (it is sensitive)
    assert len(replies) == 5
    assert "SMS to +1•••••34:" in replies[1] and "Email to a•••@example.com:" in replies[3]
    assert replies[-1] == "Send me the 6-digit code from the SMS."
    assert await chat.send(code_in(replies, "SMS")) == [
        "The SMS code is right.", "Now send me the 6-digit code from the email."]
    assert await chat.send(code_in(replies, "Email")) == [
        "Both codes are right.",
        "Press Submit to switch your account to phone verification. For your safety, withdrawals will then be "
        "locked for 48 hours."]
    before = await account(desk.store, "ada@example.com")
    assert before.two_factor == "totp" and before.withdrawals_locked_until is None
    [locked, done] = said(await chat.tap("Submit"))
    until = clock.now() + timedelta(hours=48)
    assert locked == f"For your safety, withdrawals stay locked until {moment(until, 'en')}."
    assert done.startswith("Done. Your account now uses phone verification")
    after = await account(desk.store, "ada@example.com")
    assert after.two_factor == "phone" and after.totp_secret_enc is None
    assert after.withdrawals_locked_until == until
    async with desk.store.reading() as tx:
        [audit] = [line for line in await tx.audit.recent(100) if line.action == "account.switched_to_phone"]
    assert audit.subject == f"account:{after.id}" and audit.actor == "user:42"


async def test_what_is_not_six_digits_is_a_typo_and_costs_no_try(desk: Bot) -> None:
    chat = desk.chat()
    sms, _ = await both_codes(chat)
    for typo in ("abc", "12345", "1234567", sms[:3] + "x" + sms[4:]):
        assert said(await chat.send(typo))[0].startswith("A code has 6 digits")
    assert said(await chat.send(wrong(sms)))[0] == "That SMS code is not right. You have 4 tries left."


async def test_a_sim_swapper_with_only_the_sms_code_changes_nothing(desk: Bot) -> None:
    chat = desk.chat()
    sms, email = await both_codes(chat)
    await chat.send(sms)
    assert said(await chat.send(wrong(email)))[0] == "That email code is not right. You have 4 tries left."
    for _ in range(3):
        await chat.send(wrong(email))
    assert said(await chat.send(wrong(email)))[0].startswith("Too many wrong codes.")
    assert "Submit" not in chat.buttons
    ada = await account(desk.store, "ada@example.com")
    assert ada.two_factor == "totp" and ada.totp_secret_enc is not None


async def test_without_the_email_code_the_user_is_offered_method_two(desk: Bot) -> None:
    chat = desk.chat()
    sms, _ = await both_codes(chat)
    await chat.send(sms)
    await chat.tap("I can't get the email")
    assert "withdrawals will be disabled for 48 hours" in chat.last


async def test_codes_from_another_case_or_factor_do_not_count(desk: Bot) -> None:
    chat = desk.chat()
    sms, email = await both_codes(chat)
    assert said(await chat.send(email))[0] == "That SMS code is not right. You have 4 tries left."
    assert said(await chat.send(sms))[0] == "The SMS code is right."
    assert said(await chat.send(sms))[0] == "That email code is not right. You have 4 tries left."


async def test_wrong_sms_codes_count_down_then_lock_and_offer_method_two(desk: Bot) -> None:
    chat = desk.chat()
    sms, _ = await both_codes(chat)
    assert said(await chat.send(wrong(sms)))[0] == "That SMS code is not right. You have 4 tries left."
    for _ in range(3):
        await chat.send(wrong(sms))
    assert said(await chat.send(wrong(sms)))[0].startswith("Too many wrong codes.")
    assert "Security Check Not Available" in chat.buttons
    await chat.tap("Security Check Not Available")
    assert "withdrawals will be disabled for 48 hours" in chat.last


async def test_expired_codes_offer_new_ones(desk: Bot, clock: FakeClock) -> None:
    chat = desk.chat()
    sms, _ = await both_codes(chat)
    clock.advance(minutes=31)
    assert said(await chat.send(sms))[0] == "That code has expired. Press the button to get a new one."
    fresh = code_in(await chat.tap("Get new codes"), "SMS")
    assert said(await chat.send(fresh))[0] == "The SMS code is right."


async def test_resend_within_the_cooldown_says_when(desk: Bot, clock: FakeClock) -> None:
    chat = desk.chat()
    first, _ = await both_codes(chat)
    clock.advance(seconds=20)
    wait = "A code was sent a moment ago. You can ask for a new one in 41 seconds."
    assert said(await chat.tap("Get new codes"))[0] == wait
    clock.advance(seconds=41)
    second = code_in(await chat.tap("Get new codes"), "SMS")
    assert said(await chat.send(first))[0] == "That SMS code is not right. You have 4 tries left."
    assert said(await chat.send(second))[0] == "The SMS code is right."


async def test_lost_phone_goes_to_method_two(desk: Bot) -> None:
    chat = desk.chat()
    await begin(chat, METHOD, "ada@example.com")
    await chat.tap("I no longer have this phone")
    assert "withdrawals will be disabled" in chat.last


async def test_unknown_email_gets_the_same_replies_and_no_code(desk: Bot, clock: FakeClock) -> None:
    known, unknown = desk.chat(user_id=1), desk.chat(user_id=2)
    assert await begin(known, METHOD, "ada@example.com") == await begin(unknown, METHOD, "nobody@example.com")
    known_replies = await known.tap("Get Code")
    unknown_replies = await unknown.tap("Get Code")
    assert said([r for r in known_replies if "SMS to" not in r and "Email to" not in r]) == said(unknown_replies)
    assert await unknown.send(wrong(code_in(known_replies))) == await known.send(wrong(code_in(known_replies)))
    ada, ben = await account(desk.store, "ada@example.com"), await account(desk.store, "ben@example.com")
    async with desk.store.reading() as tx:  # Ada's SMS and email codes are real; the stranger's are decoys
        since = clock.now() - timedelta(hours=1)
        assert (await tx.codes.count_real(ada.id, since), await tx.codes.count_real(ben.id, since)) == (2, 0)


async def test_after_a_lockout_new_codes_wait_fifteen_minutes(desk: Bot, clock: FakeClock) -> None:
    chat = desk.chat()
    sms, _ = await both_codes(chat)
    for _ in range(5):
        await chat.send(wrong(sms))
    clock.advance(minutes=5)
    await chat.tap("Ask for a new code")
    assert said(await chat.tap("Get Code"))[0] == (
        "For your safety, new codes are paused after too many wrong ones. You can ask again after 12:15 UTC.")
    clock.advance(minutes=11)
    fresh = code_in(await chat.tap("Get Code"))
    assert said(await chat.send(fresh))[0] == "The SMS code is right."
