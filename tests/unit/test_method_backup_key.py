"""Method 3 — Reset with the backup key, as a user lives it."""

from __future__ import annotations

from flows.clock import FakeClock
from tests.support.chat import Bot, Chat, said
from tests.support.desk import ADA_TOTP, BEN_TOTP, begin, totp_now

METHOD = "Reset with my backup key"



async def reach_code_step(chat: Chat, email: str = "ada@example.com") -> None:
    [reinstall] = await begin(chat, METHOD, email)
    assert "install the authenticator app again" in reinstall and "apps.apple.com" in reinstall
    [add_key] = await chat.tap("The app is installed")
    assert "Never send this key to anyone, this bot included." in add_key
    assert await chat.tap("I added it") == ["Step 3: send me the 6-digit code the app shows for your Acme account."]


async def test_right_code_restores_access(desk: Bot, clock: FakeClock) -> None:
    chat = desk.chat()
    await reach_code_step(chat)
    [done] = await chat.send(totp_now(ADA_TOTP, clock.now()))
    assert done.startswith("The code matches")


async def test_a_16_character_key_works_and_one_step_of_drift_is_accepted(desk: Bot, clock: FakeClock) -> None:
    chat = desk.chat()
    await reach_code_step(chat, "ben@example.com")
    [done] = await chat.send(totp_now(BEN_TOTP, clock.now(), steps=-1))
    assert done.startswith("The code matches")


async def test_fullwidth_digits_are_accepted(desk: Bot, clock: FakeClock) -> None:
    chat = desk.chat()
    await reach_code_step(chat)
    fullwidth = totp_now(ADA_TOTP, clock.now()).translate({ord(d): 0xFF10 + int(d) for d in "0123456789"})
    assert said(await chat.send(fullwidth))[0].startswith("The code matches")


async def test_a_code_already_accepted_is_refused(desk: Bot, clock: FakeClock) -> None:
    first, second = desk.chat(user_id=1), desk.chat(user_id=2)
    await reach_code_step(first)
    await reach_code_step(second)
    code = totp_now(ADA_TOTP, clock.now())
    assert (await first.send(code))[0].startswith("The code matches")
    assert (await second.send(code))[0].startswith("That code does not match.")


async def test_wrong_codes_bring_troubleshooting_then_other_methods(desk: Bot, clock: FakeClock) -> None:
    chat = desk.chat()
    await reach_code_step(chat)
    wrong = f"{(int(totp_now(ADA_TOTP, clock.now())) + 5) % 1_000_000:06d}"
    assert said(await chat.send(wrong))[0].endswith("4 tries left.")
    [hint, _] = said(await chat.send(wrong))
    assert "clock is set automatically" in hint and "0 (zero) and O" in hint and hint.endswith("3 tries left.")
    for _ in range(2):
        await chat.send(wrong)
    assert said(await chat.send(wrong))[0].startswith("Too many codes did not match.")
    assert chat.buttons == ["Security Check Not Available", "Switch to phone verification"]


async def test_something_that_is_not_a_code_is_refused_without_counting(desk: Bot) -> None:
    chat = desk.chat()
    await reach_code_step(chat)
    assert said(await chat.send("12345"))[0].startswith("Please send the 6-digit code from the app")


async def test_no_key_offers_the_other_methods(desk: Bot) -> None:
    chat = desk.chat()
    await begin(chat, METHOD, "ada@example.com")
    await chat.tap("I don't have the key")
    assert chat.buttons == ["Switch to phone verification", "Security Check Not Available"]
    await chat.tap("Switch to phone verification")
    assert chat.last.startswith("Press Get Code")


async def test_unknown_email_sees_the_same_steps_and_never_matches(desk: Bot, clock: FakeClock) -> None:
    chat = desk.chat()
    await reach_code_step(chat, "nobody@example.com")
    assert (await chat.send(totp_now(ADA_TOTP, clock.now())))[0].startswith("That code does not match.")
