"""`recovery-bot console` as a newcomer uses it: the demo account, and all three methods end to end."""

from __future__ import annotations

import asyncio
import io
import re
import time
from collections.abc import Callable
from pathlib import Path

import pyotp
import pytest

from bot.config import load_settings
from bot.console import CONSOLE_USER
from bot.console_app import DEMO_ANSWER, DEMO_EMAIL, run_console
from flows.store.database import SqlStore, open_database
from flows.store.migrate import upgrade
from tests.support.e2e import end_lockouts_now, schedule_deletion_now

Line = str | Callable[[str], str]
SCREENS: list[io.StringIO] = []  # the latest console's screen is last


class Typist(io.StringIO):
    """Stdin that types each line only when asked, so a line can depend on what the bot printed so far."""

    def __init__(self, lines: list[Line], screen: io.StringIO) -> None:
        super().__init__()
        self.lines = list(lines)
        self.screen = screen

    def readline(self, size: int | None = -1) -> str:
        if not self.lines:
            return ""
        line = self.lines.pop(0)
        return (line(self.screen.getvalue()) if callable(line) else line) + "\n"


def number_of(label: str) -> Callable[[str], str]:
    """The number the console printed last for the button `label`."""
    def pick(screen: str) -> str:
        return re.findall(rf"\[(\d+)\] {re.escape(label)}\n", screen)[-1]
    return pick


def code(factor: str) -> Callable[[str], str]:
    return lambda screen: re.findall(rf"{factor} to \S+: (\d{{6}})", screen)[-1]


def totp(screen: str) -> str:
    secret = re.search(r"TOTP \(backup\) key: (\w+)", screen)
    assert secret is not None
    return str(pyotp.TOTP(secret.group(1)).now())


async def console(tmp_path: Path, lines: list[Line]) -> str:
    settings = load_settings(database_url=f"sqlite+aiosqlite:///{tmp_path}/data/r.db")
    screen = io.StringIO()
    SCREENS.append(screen)
    assert await run_console(settings, stdin=Typist([*lines, "/quit"], screen), out=screen) == 0
    return screen.getvalue()


@pytest.fixture(autouse=True)
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)


async def test_first_start_seeds_a_demo_account_and_a_local_secret(tmp_path: Path) -> None:
    screen = await console(tmp_path, [])
    assert "A demo account was created" in screen and "TOTP (backup) key:" in screen
    assert "[1] Switch to phone verification" in screen
    assert (tmp_path / "data" / "console-secret-key").exists()
    assert "A demo account was created" not in await console(tmp_path, [])


async def test_method_one_on_the_demo_account(tmp_path: Path) -> None:
    screen = await console(tmp_path, [
        number_of("Switch to phone verification"), DEMO_EMAIL, number_of("Get Code"), code("SMS"), code("Email"),
        number_of("Submit"),
    ])
    assert "SMS to +1•••••34:" in screen
    assert "Done. Your account now uses phone verification" in screen


async def test_method_three_on_the_demo_account(tmp_path: Path) -> None:
    screen = await console(tmp_path, [
        number_of("Reset with my backup key"), DEMO_EMAIL, number_of("The app is installed"),
        number_of("I added it"), totp,
    ])
    assert "The code matches: your authenticator works again." in screen


async def test_method_two_on_the_demo_account_up_to_review(tmp_path: Path) -> None:
    picture = tmp_path / "id.png"
    picture.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)
    screen = await console(tmp_path, [
        number_of("Security Check Not Available"), number_of("Continue"), DEMO_EMAIL,
        number_of("☐ Authenticator app"), number_of("Confirm Restore"), number_of("Get Code"),
        code("SMS"), code("Email"), number_of("Send"), number_of("Start answering questions"), DEMO_ANSWER,
        number_of("Next"), "Germany", number_of("Passport"), f"/photo {tmp_path}/missing.png",
        f"/photo {picture}", f"/photo {picture}", number_of("Submit for review"), "/status",
    ])
    assert "no such file:" in screen
    assert "Your request is now with our staff" in screen
    assert "waiting for review by our staff" in screen


async def test_a_restart_continues_the_conversation(tmp_path: Path) -> None:
    await console(tmp_path, [number_of("Switch to phone verification"), DEMO_EMAIL, number_of("Get Code")])
    screen = await console(tmp_path, [number_of("Continue")])
    assert "You already have a recovery in progress." in screen
    assert screen.rstrip().endswith("bye")
    assert "Send me the 6-digit code from the SMS." in screen


async def test_timers_fire_in_the_console(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/data/r.db"
    await upgrade(url)
    store = SqlStore(open_database(url))
    try:
        await schedule_deletion_now(store, CONSOLE_USER.chat_id, 2)
    finally:
        await store.close()
    screen = await console(tmp_path, ["/help", "/status", "/help"])
    assert "(a message with a secret was deleted from the chat)" in screen


def wrong(factor: str) -> Callable[[str], str]:
    return lambda screen: f"{(int(code(factor)(screen)) + 1) % 1_000_000:06d}"


def once_the_lockout_ends(database: Path) -> Callable[[str], str]:
    """A line typed after bringing the lockout's end forward (as if its 15 minutes had passed) and waiting for the
    console to say so: stdin is read in a thread, so the desk runs on meanwhile."""
    def type_after(screen: str) -> str:
        assert asyncio.run(end_lockouts_now(f"sqlite+aiosqlite:///{database}")) == 1  # its own loop, this thread
        for _ in range(100):
            if "The pause is over" in SCREENS[-1].getvalue():
                break
            time.sleep(0.1)
        return "/status"
    return type_after


async def test_a_lockout_ends_in_the_console(tmp_path: Path) -> None:
    walk = [number_of("Switch to phone verification"), "demo@example.com", number_of("Get Code")]
    screen = await console(tmp_path, [*walk, *[wrong("SMS")] * 5, once_the_lockout_ends(tmp_path / "data" / "r.db")])
    assert "Too many wrong codes" in screen
    assert "The pause is over: you can ask for a new code now." in screen
