"""Method 2 — Security Check Not Available: full re-verification up to staff review."""

from __future__ import annotations

from flows.clock import FakeClock
from flows.events import FileInfo
from tests.support.chat import Bot, Chat, said
from tests.support.desk import account, begin, code_in, request_codes

METHOD = "Security Check Not Available"


def photo(n: int) -> FileInfo:
    return FileInfo(f"photo-{n}", f"u{n}", "photo", size=150_000)



async def pass_codes(chat: Chat, email: str) -> list[str]:
    await chat.send("/start")
    await chat.tap(METHOD)
    assert "withdrawals will be disabled for 48 hours" in chat.last
    await chat.tap("Continue")
    await chat.send(email)
    await chat.tap("Authenticator app")
    assert "☑ Authenticator app" in chat.buttons
    replies = await chat.tap("Confirm Restore")
    replies = await chat.tap("Get Code")
    assert chat.last == "Send me the code from the SMS first."
    assert (await chat.send(code_in(replies, "SMS"))) == ["Now send me the code from the email."]
    return await chat.send(code_in(replies, "Email"))


async def test_full_path_to_review(desk: Bot) -> None:
    chat = desk.chat()
    assert await pass_codes(chat, "ada@example.com") == ["Both codes are right. Press Send to continue."]
    await chat.tap("Send")
    await chat.tap("Start answering questions")
    assert "What was your first pet's name?" in chat.last
    assert said(await chat.send("rover"))[0] == "That answer does not match. 2 tries left."
    await chat.send("  REX ")
    assert chat.last.startswith("Now we need to check your identity")
    await chat.tap("Next")
    assert said(await chat.send("land"))[0].startswith("Several countries match:")
    assert said(await chat.send("Atlantis"))[0].startswith("I could not find that country.")
    await chat.send("germany")
    await chat.tap("National ID card")
    assert "front" in chat.last
    await chat.send_file(photo(1))
    assert "back" in chat.last
    await chat.send_file(photo(2))
    assert "selfie" in chat.last
    await chat.send_file(photo(3))
    await chat.tap("Submit for review")
    assert chat.last.startswith("Thank you. Your request is now with our staff")
    assert "waiting for review" in (await chat.send("/status"))[0]
    assert said(await chat.send("hello"))[0].startswith("Your request is with our staff")


async def test_passport_needs_no_back_and_countries_have_buttons(desk: Bot) -> None:
    chat = desk.chat()
    await pass_codes(chat, "ada@example.com")
    await chat.tap("Send")
    await chat.tap("Start answering questions")
    await chat.send("rex")
    await chat.tap("Next")
    await chat.tap("France")
    await chat.tap("Passport")
    await chat.send_file(photo(1))
    assert "selfie" in chat.last


async def test_verified_account_without_question_needs_only_the_selfie(desk: Bot) -> None:
    chat = desk.chat()
    await pass_codes(chat, "ben@example.com")
    await chat.tap("Send")
    assert chat.last.startswith("Now we need to check your identity")
    await chat.tap("Next")
    assert "selfie" in chat.last


async def test_documents_must_be_images_of_reasonable_size(desk: Bot) -> None:
    chat = desk.chat()
    await pass_codes(chat, "ben@example.com")
    await chat.tap("Send")
    await chat.tap("Next")
    pdf = FileInfo("d1", "ud1", "document", size=10_000, mime_type="application/pdf")
    assert said(await chat.send_file(pdf))[0].startswith("Please send a photo")
    huge = FileInfo("d2", "ud2", "document", size=25 * 1024 * 1024, mime_type="image/jpeg")
    assert said(await chat.send_file(huge))[0] == "That file is too large. Please send a photo under 20 MB."
    assert said(await chat.send("here you go"))[0] == "Please send a photo here."
    scan = FileInfo("d3", "ud3", "document", size=10_000, mime_type="image/png")
    await chat.send_file(scan)
    assert chat.last.startswith("Everything is ready.")


async def test_restore_needs_at_least_one_item(desk: Bot) -> None:
    chat = desk.chat()
    await chat.send("/start")
    await chat.tap(METHOD)
    await chat.tap("Continue")
    await chat.send("ada@example.com")
    await chat.tap("Authenticator app")
    await chat.tap("Authenticator app")
    assert "☐ Authenticator app" in chat.buttons
    assert said(await chat.tap("Confirm Restore"))[0] == "Please select at least one item to restore."


async def test_wrong_answers_stop_the_recovery(desk: Bot) -> None:
    chat = desk.chat()
    await pass_codes(chat, "ada@example.com")
    await chat.tap("Send")
    await chat.tap("Start answering questions")
    for _ in range(2):
        await chat.send("wrong")
    assert said(await chat.send("wrong"))[0].startswith("The answer did not match too many times")


async def test_wrong_email_code_says_which(desk: Bot) -> None:
    chat = desk.chat()
    replies = await request_codes(chat, "ada@example.com", "Email address")
    await chat.send(code_in(replies, "SMS"))
    wrong = f"{(int(code_in(replies, 'Email')) + 1) % 1_000_000:06d}"
    assert said(await chat.send(wrong))[0] == "The email code is not right. 4 tries left."


async def test_a_typo_in_a_code_is_answered_and_costs_no_try(desk: Bot) -> None:
    chat = desk.chat()
    replies = await request_codes(chat, "ada@example.com", "Email address")
    assert said(await chat.send("12 34"))[0].startswith("A code has 6 digits")
    wrong = f"{(int(code_in(replies, 'SMS')) + 1) % 1_000_000:06d}"
    assert said(await chat.send(wrong))[0] == "The phone code is not right. 4 tries left."


async def test_method_one_user_can_fall_back_without_retyping_the_email(desk: Bot) -> None:
    chat = desk.chat()
    await begin(chat, "Switch to phone verification", "ada@example.com")
    await chat.tap("I no longer have this phone")
    await chat.tap("Continue")
    assert chat.last.startswith("Select what you need to restore")


async def test_no_sms_goes_on_with_the_email_code_alone(desk: Bot) -> None:
    chat = desk.chat()
    replies = await request_codes(chat, "ada@example.com", "Email address")
    await chat.tap("I can't receive SMS")
    assert chat.last == "Now send me the code from the email."
    assert (await chat.send(code_in(replies, "Email"))) == ["Both codes are right. Press Send to continue."]


async def test_restore_choices_narrow_to_what_the_account_has_after_the_codes(desk: Bot, clock: FakeClock) -> None:
    await forget_phone(desk, clock)
    chat = desk.chat()
    await chat.send("/start")
    await chat.tap(METHOD)
    await chat.tap("Continue")
    await chat.send("ada@example.com")
    await chat.tap("Phone number")
    await chat.tap("Authenticator app")
    await chat.tap("Confirm Restore")
    replies = await chat.tap("Get Code")
    assert not any("SMS to" in r for r in replies)
    await chat.tap("I can't receive SMS")
    await chat.send(code_in(replies, "Email"))
    replies = said(await chat.tap("Send"))
    assert replies[0] == "Note: this account has no phone number on file, so there is none to restore."


async def test_with_nothing_left_to_restore_the_user_chooses_again(desk: Bot, clock: FakeClock) -> None:
    await forget_phone(desk, clock)
    chat = desk.chat()
    replies = await request_codes(chat, "ada@example.com", "Phone number")
    await chat.tap("I can't receive SMS")
    await chat.send(code_in(replies, "Email"))
    replies = said(await chat.tap("Send"))
    assert replies[1].startswith("Nothing you chose is on this account.")
    await chat.tap("Email address")
    await chat.tap("Confirm Restore")  # no new codes: they were proven
    await chat.tap("Send")
    assert "security question" in chat.last


async def test_too_many_wrong_phone_codes_stop_the_recovery(desk: Bot) -> None:
    chat = desk.chat()
    replies = await request_codes(chat, "ada@example.com", "Email address")
    wrong = f"{(int(code_in(replies, 'SMS')) + 1) % 1_000_000:06d}"
    for tries_left in (4, 3, 2, 1):
        left = "1 try" if tries_left == 1 else f"{tries_left} tries"  # Babel's plural forms, not "1 tries"
        assert said(await chat.send(wrong))[0] == f"The phone code is not right. {left} left."
    assert said(await chat.send(wrong))[0].startswith("Too many wrong codes, so this recovery was stopped.")
    assert said(await chat.send("/status"))[0].startswith("You have no recovery in progress.")


async def test_expired_codes_offer_new_ones(desk: Bot, clock: FakeClock) -> None:
    chat = desk.chat()
    replies = await request_codes(chat, "ada@example.com", "Email address")
    clock.advance(minutes=30)
    assert said(await chat.send(code_in(replies, "SMS")))[0] == (
        "That code has expired. Press the button to get a new one.")
    replies = await chat.tap("Get new codes")
    assert (await chat.send(code_in(replies, "SMS"))) == ["Now send me the code from the email."]


async def forget_phone(desk: Bot, clock: FakeClock) -> None:
    """Ada's account loses its phone number (as after an earlier recovery restored the phone)."""
    ada = await account(desk.store, "ada@example.com")
    async with desk.store.transaction() as tx:
        await tx.accounts.change({ada.id: {"phone": None}}, clock.now())


async def test_before_submitting_the_user_sees_what_goes_and_can_retake_a_photo(desk: Bot) -> None:
    chat = desk.chat()
    replies = await request_codes(chat, "ada@example.com", "Authenticator app")
    await chat.send(code_in(replies, "SMS"))
    await chat.send(code_in(replies, "Email"))
    await chat.tap("Send")
    await chat.tap("Start answering questions")
    await chat.send("Rex")
    await chat.tap("Next")
    assert (await chat.send("germ"))[0] == "Country: Germany."  # what a typed name matched is said back
    await chat.tap("National ID card")
    for file_id in ("front-1", "back-1", "selfie-1"):
        await chat.send_file(FileInfo(file_id, f"u-{file_id}", "photo", 1000))
    summary = chat.last_message
    assert "• To restore: Authenticator app" in summary
    assert "• Document: National ID card, issued in Germany" in summary and "• Photos: 3 photos" in summary
    assert chat.buttons == ["Submit for review", "📷 Retake the front", "📷 Retake the back", "📷 Retake the selfie"]
    await chat.tap("Retake the front")
    await chat.send_file(FileInfo("front-2", "u-front-2", "photo", 1000))
    assert chat.last_message.startswith("Everything is ready.")  # straight back to the summary
    await chat.tap("Submit for review")
    async with desk.store.reading() as tx:
        [case] = await tx.cases.in_review(1)
    assert case.data["photo_front"]["file_id"] == "front-2" and case.data["photo_back"]["file_id"] == "back-1"
