"""The desk around the methods: /status, /cancel, /start with a case open, and codes kept out of the outbox."""

from __future__ import annotations

import pytest

from flows.clock import FakeClock
from flows.desk import METHODS
from tests.support.chat import Bot
from tests.support.desk import begin


async def test_status_shows_method_step_and_code_expiry(desk: Bot, clock: FakeClock) -> None:
    chat = desk.chat()
    assert (await chat.send("/status"))[0] == "You have no recovery in progress. Send /start to begin."
    await begin(chat, "Switch to phone verification", "ada@example.com")
    await chat.tap("Get Code")
    clock.advance(minutes=3)
    [status] = await chat.send("/status")
    assert "Method: Switch to phone verification" in status
    assert "Step 2 of 3: the codes sent to your phone and email" in status
    assert "Your code expires at Jan 5, 2026 12:30 UTC (in 27 minutes)." in status
    clock.advance(minutes=30)
    assert "Your code expired at Jan 5, 2026 12:30 UTC (3 minutes ago)" in (await chat.send("/status"))[0]


async def test_status_is_the_same_for_an_unknown_email(desk: Bot) -> None:
    known, unknown = desk.chat(user_id=1), desk.chat(user_id=2)
    for chat, email in ((known, "ada@example.com"), (unknown, "nobody@example.com")):
        await begin(chat, "Switch to phone verification", email)
        await chat.tap("Get Code")
    assert await known.send("/status") == await unknown.send("/status")


async def test_start_with_an_open_case_offers_to_continue_or_start_over(desk: Bot) -> None:
    chat = desk.chat()
    await begin(chat, "Switch to phone verification", "ada@example.com")
    assert await chat.send("/start") == [
        "You already have a recovery in progress. Continue where you left off, or start over?"]
    await chat.tap("Continue")
    assert chat.last.startswith("Press Get Code")
    await chat.send("/start")
    await chat.tap("Start over")
    assert chat.buttons == ["Switch to phone verification", "Security Check Not Available",
                            "Reset with my backup key"]


async def test_cancel_asks_first(desk: Bot) -> None:
    chat = desk.chat()
    assert (await chat.send("/cancel"))[0] == "There is nothing to cancel. Send /start to begin."
    await begin(chat, "Reset with my backup key", "ada@example.com")
    await chat.send("/cancel")
    await chat.tap("No, go on")
    assert chat.last.startswith("Step 1: install the authenticator app again.")
    await chat.send("/cancel")
    await chat.tap("Yes, cancel it")
    assert chat.last.startswith("Your recovery was cancelled.")
    assert (await chat.send("/status"))[0].startswith("You have no recovery in progress.")


async def test_help_explains_the_three_methods(desk: Bot) -> None:
    [help_text] = await desk.chat().send("/help")
    for method in ("Switch to phone verification", "Security Check Not Available", "Reset with my backup key"):
        assert method in help_text
    assert "Never send your password or backup key to anyone, this bot included." in help_text


async def test_a_detour_from_a_detour_still_finds_the_way_back(desk: Bot) -> None:
    chat = desk.chat()
    await begin(chat, "Reset with my backup key", "ada@example.com")
    await chat.send("/cancel")
    await chat.send("/cancel")
    await chat.tap("No, go on")
    assert chat.last.startswith("Step 1: install the authenticator app again.")
    await chat.send("/start")
    await chat.send("/cancel")
    await chat.tap("No, go on")
    assert chat.last.startswith("Step 1: install the authenticator app again.")


@pytest.mark.parametrize(("payload", "first_prompt"), [
    ("phone", "Which email address is your Acme account registered with?"),
    ("reverify", "⚠️ For your safety, withdrawals will be disabled for 48 hours"),
    ("backup", "Which email address is your Acme account registered with?"),
])
async def test_a_deep_link_opens_its_method_after_the_warning(desk: Bot, payload: str, first_prompt: str) -> None:
    chat = desk.chat()
    said = await chat.send(f"/start {payload}")
    assert said[0].startswith("Welcome to the official Acme account recovery desk.")
    assert "never asks for your password" in said[0]
    assert chat.last.startswith(first_prompt)


async def test_an_unknown_deep_link_is_the_menu_and_one_never_replaces_a_case_in_progress(desk: Bot) -> None:
    chat = desk.chat()
    await chat.send("/start <b>admin</b>")
    assert chat.buttons == ["Switch to phone verification", "Security Check Not Available",
                            "Reset with my backup key"]
    await begin(chat, "Switch to phone verification", "ada@example.com")
    assert (await chat.send("/start backup"))[0].startswith("You already have a recovery in progress.")


async def test_status_counts_the_stages_of_method_two_in_words(desk: Bot) -> None:
    chat = desk.chat()
    await chat.send("/start")
    assert "Choosing a way to recover" in (await chat.send("/status"))[0]
    await chat.tap("Security Check Not Available")
    assert "Step 1 of 7: your account, and what to restore" in (await chat.send("/status"))[0]


def test_every_step_of_every_method_is_in_one_stage() -> None:
    for method in METHODS:  # Flow refuses stages that miss a step or hold one twice; each method has stages
        assert method.stages and all(method.stage_of(step.id) for step in method.steps)
