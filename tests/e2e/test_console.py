"""`recovery-bot console` as a newcomer uses it: the demo account, and all three methods end to end."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import pty
import re
import select
import signal
import sqlite3
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pyotp
import pytest

from bot.cli import build_parser
from bot.config import StartupError, load_settings
from bot.console import CONSOLE_USER, STAFF_COMMANDS
from bot.console_app import DEMO_ANSWER, DEMO_EMAIL, run_console
from bot.run import ADMIN_COMMANDS
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

    def readline(self, size: int | None = -1) -> str:  # type: ignore[override]  # StringIO's is str, too
        if not self.lines:
            return ""
        line = self.lines.pop(0)
        return (line(self.screen.getvalue()) if callable(line) else line) + "\n"


def number_of(label: str) -> Callable[[str], str]:
    """The number the console printed last for the button `label` (s1, s2, ... for the staff's buttons)."""
    def pick(screen: str) -> str:
        return str(re.findall(rf"\[(s?\d+)\] {re.escape(label)}\n", screen)[-1])
    return pick


def code(factor: str) -> Callable[[str], str]:
    return lambda screen: re.findall(rf"{factor} to \S+: (\d{{6}})", screen)[-1]


def totp(screen: str) -> str:
    """The current code of the demo account's key, as the console printed it last."""
    secret = re.findall(r"TOTP \(backup\) key: (\w+)", screen)[-1]
    return str(pyotp.TOTP(secret).now())


def new_key_code(screen: str) -> str:
    """The current code of the new key the bot sent after an approval."""
    key = re.findall(r"type this key: ([A-Z2-7 ]+)", screen)[-1]
    return str(pyotp.TOTP(key.replace(" ", "")).now())


async def console(tmp_path: Path, lines: list[Line], reset: bool = False, **configured: object) -> str:
    settings = load_settings(database_url=f"sqlite+aiosqlite:///{tmp_path}/data/r.db", **configured)
    screen = io.StringIO()
    SCREENS.append(screen)
    assert await run_console(settings, stdin=Typist([*lines, "/quit"], screen), out=screen, reset=reset) == 0
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


async def test_codes_stay_in_the_chat_whatever_gateway_is_configured(tmp_path: Path) -> None:
    screen = await console(tmp_path, [
        number_of("Switch to phone verification"), DEMO_EMAIL, number_of("Get Code"), code("SMS"), code("Email"),
    ], sms_webhook_url="http://127.0.0.1:9/sms", smtp_host="127.0.0.1", smtp_from="desk@example.com",
       admin_ids="12345")
    assert "SMS to +1•••••34:" in screen and "Email to d•••@example.com:" in screen
    assert "Both codes are right." in screen


async def test_method_three_on_the_demo_account(tmp_path: Path) -> None:
    screen = await console(tmp_path, [
        number_of("Reset with my backup key"), DEMO_EMAIL, number_of("The app is installed"),
        number_of("I added it"), totp,
    ])
    assert "The code matches: your authenticator works again." in screen


def method_two_up_to_review(tmp_path: Path) -> list[Line]:
    picture = tmp_path / "id.png"
    picture.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)
    return [
        number_of("Security Check Not Available"), number_of("Continue"), DEMO_EMAIL,
        number_of("☐ Authenticator app"), number_of("Confirm Restore"), number_of("Get Code"),
        code("SMS"), code("Email"), number_of("Send"), number_of("Start answering questions"), DEMO_ANSWER,
        number_of("Next"), "Germany", number_of("Passport"), f"/photo {tmp_path}/missing.png",
        f"/photo {picture}", f"/photo {picture}", number_of("Submit for review"),
    ]


def staff_part(screen: str) -> str:
    """What the console showed the staff member: its staff> messages and their buttons."""
    return "\n".join(block for block in screen.split("\n\n") if block.startswith("staff> "))


async def test_method_two_on_the_demo_account_up_to_review(tmp_path: Path) -> None:
    screen = await console(tmp_path, [*method_two_up_to_review(tmp_path), "/status"])
    assert "no such file:" in screen
    assert "Your request is now with our staff" in screen
    assert "waiting for review by our staff" in screen
    staff = staff_part(screen)
    assert staff.count("[photo] id.png") == 2 and "demo@example.com" in staff
    assert re.search(r"\[s1\] ✅ Approve\n.*\[s2\] ❌ Reject\n.*\[s3\] 📎 Ask for more", staff, re.S)


async def test_method_two_finished_by_the_staff_side_with_the_new_key(tmp_path: Path) -> None:
    screen = await console(tmp_path, [
        *method_two_up_to_review(tmp_path), number_of("✅ Approve"), new_key_code, "/status",
    ])
    staff = staff_part(screen)
    assert "approved" in staff
    assert "our staff approved your request" in screen
    assert "[picture] Scan this with your authenticator app" in screen
    assert "Your new authenticator works" in screen
    assert re.search(r"pyotp\.TOTP\('[A-Z2-7]{32}'\)\.now\(\)", screen.split("type this key:")[-1])
    assert "our staff approved your request" not in staff and "Your new authenticator works" not in staff


async def test_staff_reject_with_a_reason_and_ask_for_more(tmp_path: Path) -> None:
    picture = tmp_path / "id.png"
    screen = await console(tmp_path, [
        *method_two_up_to_review(tmp_path), number_of("📎 Ask for more"), number_of("Next"), "Germany",
        number_of("Passport"), f"/photo {picture}", f"/photo {picture}", number_of("Submit for review"), "/queue",
        number_of("❌ Reject"), number_of("The details do not match the account"),
    ])
    assert "Our staff need more from you" in screen
    assert "Waiting for review: 1" in staff_part(screen)
    assert "We could not approve your recovery request. Reason: The details do not match" in screen
    assert "rejected" in staff_part(screen)


async def test_a_typed_number_never_presses_the_other_sides_button(tmp_path: Path) -> None:
    screen = await console(tmp_path, [*method_two_up_to_review(tmp_path), "s9", "3", "/status"])
    assert "waiting for review by our staff" in screen  # neither line pressed staff's third button, Ask for more
    assert "Our staff need more" not in screen


async def test_staff_commands_from_the_user_chat_are_the_staff_members(tmp_path: Path) -> None:
    screen = await console(tmp_path, ["/queue", "/audit"])
    assert "staff> " in screen
    assert STAFF_COMMANDS == ADMIN_COMMANDS


async def test_method_one_then_three_in_menu_order_after_demo(tmp_path: Path) -> None:
    screen = await console(tmp_path, [
        number_of("Switch to phone verification"), DEMO_EMAIL, number_of("Get Code"), code("SMS"), code("Email"),
        number_of("Submit"), "/demo", "/start",
        number_of("Reset with my backup key"), DEMO_EMAIL, number_of("The app is installed"),
        number_of("I added it"), totp,
    ])
    assert "Done. Your account now uses phone verification" in screen
    assert "put back as it started" in screen
    assert "The code matches: your authenticator works again." in screen


async def test_demo_prints_the_account_again(tmp_path: Path) -> None:
    first = await console(tmp_path, [])
    screen = await console(tmp_path, ["/demo"])
    key = re.findall(r"TOTP \(backup\) key: (\w+)", first)
    assert key and re.findall(r"TOTP \(backup\) key: (\w+)", screen) == key
    assert DEMO_EMAIL in screen and DEMO_ANSWER in screen
    assert "put back" not in screen  # nothing had changed it


async def test_reset_starts_a_fresh_demo(tmp_path: Path) -> None:
    await console(tmp_path, [number_of("Switch to phone verification"), DEMO_EMAIL, number_of("Get Code")])
    screen = await console(tmp_path, ["/status"], reset=True)
    assert "A demo account was created" in screen
    assert "You already have a recovery in progress." not in screen
    assert "Send me the 6-digit code from the SMS." not in screen


async def test_reset_keeps_a_database_with_other_accounts(tmp_path: Path) -> None:
    await console(tmp_path, [])
    database = tmp_path / "data" / "r.db"
    with sqlite3.connect(database) as db:
        db.execute("UPDATE accounts SET email = 'someone@example.org'")
    settings = load_settings(database_url=f"sqlite+aiosqlite:///{database}")
    with pytest.raises(StartupError, match="only a demo database"):
        await run_console(settings, stdin=Typist([], io.StringIO()), out=io.StringIO(), reset=True)
    assert database.exists()


async def test_reset_deletes_no_database_but_a_sqlite_file() -> None:
    settings = load_settings(database_url="postgresql+asyncpg://desk:secret@127.0.0.1:9/desk")
    with pytest.raises(StartupError, match="not a SQLite file"):
        await run_console(settings, stdin=Typist([], io.StringIO()), out=io.StringIO(), reset=True)


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
    walk: list[Line] = [number_of("Switch to phone verification"), "demo@example.com", number_of("Get Code")]
    screen = await console(tmp_path, [*walk, *[wrong("SMS")] * 5, once_the_lockout_ends(tmp_path / "data" / "r.db")])
    assert "Too many wrong codes" in screen
    assert "The pause is over: you can ask for a new code now." in screen


ROOT = Path(__file__).resolve().parents[2]
PROMPT = "> "


def test_console_help_tells_what_the_readme_tells(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["console", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    readme = (ROOT / "README.md").read_text()
    try_it = " ".join(readme.split("## Try it", 1)[1].split("\n## ", 1)[0].split())
    for told in ("--reset", "/demo", "/start", "bot>", "staff>", "s1", "/photo", "/queue", "/reject ID reason",
                 "/quit", "Ctrl-D", "Ctrl-C"):
        assert told in help_text and told in try_it, told


class Terminal:
    """The real `recovery-bot console` in a pseudo-terminal, as someone at a keyboard runs it (the terminal is its
    controlling one, so ^C is Ctrl-C)."""

    def __init__(self, tmp_path: Path) -> None:
        env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "TERM": "xterm", "HOME": str(tmp_path),
               "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/data/r.db"}
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: become the console
            os.chdir(tmp_path)
            os.execve(sys.executable, [sys.executable, "-m", "bot.cli", "console"], env)
        self.screen = ""

    def wait_for(self, wanted: str, after: int = 0) -> int:
        """Read until `wanted` shows (after position `after`); where it ends. A hang fails after a minute (a
        guard, not a timing test)."""
        while (found := self.screen.find(wanted, after)) < 0:
            if not self._read(deadline=60):
                raise AssertionError(f"{wanted!r} never showed; the screen:\n{self.screen}")
        return found + len(wanted)

    def type(self, keys: str) -> int:
        """Type keys (\r is Enter); returns where the screen was, to wait for what they bring."""
        at = len(self.screen)
        os.write(self.fd, keys.encode())
        return at

    def exit_code(self) -> int:
        """Read to the end, then the process's exit code."""
        while self._read(deadline=60):
            pass
        os.close(self.fd)
        return os.waitstatus_to_exitcode(os.waitpid(self.pid, 0)[1])

    def _read(self, deadline: float) -> bool:
        ready, _, _ = select.select([self.fd], [], [], deadline)
        if not ready:
            raise AssertionError(f"the console said nothing for a minute; the screen:\n{self.screen}")
        try:
            chunk = os.read(self.fd, 4096)
        except OSError:  # EIO: the console closed the terminal
            return False
        self.screen += chunk.decode(errors="replace")
        return bool(chunk)


@pytest.fixture
def terminal(tmp_path: Path) -> Iterator[Terminal]:
    term = Terminal(tmp_path)
    yield term
    with contextlib.suppress(ProcessLookupError, ChildProcessError):
        os.kill(term.pid, signal.SIGKILL)
        os.waitpid(term.pid, 0)


def test_ctrl_c_at_the_prompt_leaves_cleanly(terminal: Terminal) -> None:
    terminal.wait_for(PROMPT, after=terminal.wait_for("[3] Reset with my backup key"))
    terminal.wait_for("/start", after=terminal.type("/help\r"))
    terminal.wait_for(PROMPT, after=terminal.wait_for("email", after=terminal.type("1\r")))
    terminal.type("\x03")  # Ctrl-C while the bot waits for the email
    assert terminal.exit_code() == 130
    assert "Traceback" not in terminal.screen and "KeyboardInterrupt" not in terminal.screen
    last = terminal.screen.rstrip().splitlines()[-1]
    assert 0 < len(last) < 40


def test_ctrl_d_leaves_cleanly_and_lines_have_history(terminal: Terminal) -> None:
    terminal.wait_for(PROMPT, after=terminal.wait_for("[3] Reset with my backup key"))
    terminal.wait_for(PROMPT, after=terminal.wait_for("Commands:", after=terminal.type("/help\r")))
    again = terminal.type("\x1b[A\r")  # arrow up: the line typed before, again
    terminal.wait_for(PROMPT, after=terminal.wait_for("Commands:", after=again))
    terminal.type("\x04")
    assert terminal.exit_code() == 0
    assert "Traceback" not in terminal.screen
