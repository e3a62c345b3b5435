"""`recovery-bot console`: the whole bot in a terminal, on the configured database, with a demo account.

The terminal's operator is both the user and the staff member who reviews Method 2 (see bot/console.py).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import logging
import signal
import sqlite3
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from bot.app import App, local_secret_key, open_app
from bot.config import Settings, StartupError
from bot.console import (
    CONSOLE_STAFF,
    ConsoleInputError,
    ConsoleTransport,
    code_command,
    is_terminal,
    read_lines,
    to_event,
)
from flows.accounts_csv import ImportReport, import_accounts
from flows.ports import Accounts
from flows.store.database import sqlite_file

DEMO_EMAIL = "demo@example.com"
DEMO_PHONE = "+15550100234"
DEMO_QUESTION = "What was the name of your first pet?"
DEMO_ANSWER = "Rex"
EXIT_INTERRUPTED = 130  # as a shell reports a command ended by Ctrl-C


def demo_secret(secret_key: str) -> str:
    """The demo account's TOTP key: the same for this database's SECRET_KEY every time it is (re)created, so an
    authenticator app that has it keeps working (160 bits, 32 base32 characters, like `new_secret`)."""
    digest = hmac.new(secret_key.encode(), b"recovery-bot console demo account", hashlib.sha256).digest()
    return base64.b32encode(digest[:20]).decode()


def demo_rows(secret: str) -> str:
    return ("email,phone,totp_secret,security_question,security_answer\n"
            f"{DEMO_EMAIL},{DEMO_PHONE},{secret},{DEMO_QUESTION},{DEMO_ANSWER}\n")


async def seed_demo_account(app: App, secret: str) -> bool:
    """On an empty account directory, add the demo account; whether it did."""
    async with app.store.transaction() as tx:
        if await tx.accounts.count():
            return False
        await _import_demo(app, tx.accounts, secret)
    return True


async def restore_demo_account(app: App, secret: str) -> bool | None:
    """Put the demo account back as it was created (phone, key, 2FA by authenticator, security answer), whatever a
    method changed; whether anything changed, None if this database has no demo account. The withdrawal lock
    stays: nothing ever shortens one."""
    async with app.store.transaction() as tx:
        if await tx.accounts.by_email(DEMO_EMAIL) is None:
            return None
        report = await _import_demo(app, tx.accounts, secret)
    return bool(report.updated)


async def _import_demo(app: App, accounts: Accounts, secret: str) -> ImportReport:
    assert app.services is not None
    report = await import_accounts(accounts, demo_rows(secret), app.services.box, app.clock.now(),
                                   overwrite_desk_changes=True)
    if report.errors:
        raise RuntimeError(f"demo account rejected: {report.errors}")
    return report


def remove_demo_database(settings: Settings) -> Path:
    """For `--reset`: delete the SQLite database of DATABASE_URL, but only a demo one (no account but the demo's),
    so that the console starts a fresh one. Its local SECRET_KEY stays, and with it the demo account's key."""
    path = sqlite_file(settings.database_url)
    if path is None:
        raise StartupError("--reset starts a fresh SQLite demo database, and DATABASE_URL is not a SQLite file: "
                           "nothing was deleted")
    if path.exists():
        others = _accounts_not_demo(path)
        if others:
            raise StartupError(f"--reset deletes only a demo database, and {path} holds {others}: nothing was "
                               "deleted; point DATABASE_URL at another file to try the console")
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
    return path


def _accounts_not_demo(path: Path) -> str | None:
    """What makes this file more than a demo database (None if it is one, or empty)."""
    if path.stat().st_size == 0:
        return None
    try:
        with contextlib.closing(sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True)) as db:
            others = db.execute("SELECT count(*) FROM accounts WHERE email != ?", (DEMO_EMAIL,)).fetchone()[0]
    except sqlite3.Error as error:
        return f"no accounts table a console made ({error})"
    return f"{others} accounts besides the demo's" if others else None


INTRO = """\
recovery-bot console. You play the user (bot> lines) and the staff member who reviews Method 2 (staff> lines).
Type text, a /command, or a button's number: 1, 2, ... for the user's buttons, s1, s2, ... for the staff's.
/photo PATH (or /file PATH) sends a picture (a document) where the bot asks for one. Staff commands
(/queue, /case ID, /reject ID reason, /stats, /audit) are sent by the staff member.
/demo shows the demo account and puts it back as it started (do it between two methods).
/quit or Ctrl-D leaves; run it again to continue where you were, or with --reset to start a fresh demo.
"""


def demo_lines(secret: str) -> Iterator[str]:
    yield f"  email:  {DEMO_EMAIL}\n  phone:  {DEMO_PHONE}\n"
    yield f"  security question: {DEMO_QUESTION}  answer: {DEMO_ANSWER}\n"
    yield f"  TOTP (backup) key: {secret}\n"
    yield "  Add the key to an authenticator app, or print the current code with:\n"
    yield f"  {code_command(secret)}\n"
    yield "Codes for phone and email are shown in the chat (the `chat` delivery channel).\n"


def print_intro(out: TextIO, secret: str, seeded: bool, fresh: Path | None = None) -> None:
    out.write(INTRO)
    if fresh is not None:
        out.write(f"\n--reset: a fresh demo database at {fresh}.\n")
    if seeded:
        out.write("\nA demo account was created on this database:\n")
        out.writelines(demo_lines(secret))
    out.flush()


async def show_demo(app: App, secret: str, out: TextIO) -> None:
    """/demo: the demo account, put back as it was created."""
    changed = await restore_demo_account(app, secret)
    if changed is None:
        out.write("  (this database has no demo account: the console creates one only on an empty database; "
                  "`recovery-bot console --reset` starts a fresh demo database)\n")
        return
    out.write("\nThe demo account" + (", put back as it started (a method had changed it)" if changed else "")
              + ":\n")
    out.writelines(demo_lines(secret))
    out.write("/start shows the menu again.\n")
    out.flush()


def console_settings(settings: Settings) -> Settings:
    """The settings with the console's one staff member as the only admin, whatever ADMIN_IDS and ADMIN_CHAT_ID
    say (review cards come to this terminal, never to a real chat), and codes shown in the chat, whatever SMTP or
    SMS gateway is set (nothing goes to the demo's phone and email, or to a real one)."""
    return settings.model_copy(update={"admin_ids": (CONSOLE_STAFF.user_id,), "admin_chat_id": None,
                                       "smtp_host": None, "sms_webhook_url": None})


@contextlib.contextmanager
def interrupts_cancel(task: asyncio.Task[None]) -> Iterator[list[bool]]:
    """While inside, Ctrl-C (SIGINT) cancels `task`; the flag it yields says whether that happened."""
    interrupted = [False]
    loop = asyncio.get_running_loop()

    def interrupt() -> None:
        interrupted[0] = True
        task.cancel()

    try:
        loop.add_signal_handler(signal.SIGINT, interrupt)
        installed = True
    except (NotImplementedError, RuntimeError, ValueError):  # not the main thread, or not a Unix loop
        installed = False
    try:
        yield interrupted
    finally:
        if installed:
            loop.remove_signal_handler(signal.SIGINT)


@contextlib.contextmanager
def terminal_kept(stdin: TextIO) -> Iterator[None]:
    """The terminal's settings as they were, even when the console leaves in the middle of a line editing read."""
    try:
        import termios
        saved = termios.tcgetattr(stdin.fileno()) if stdin is sys.stdin and is_terminal(stdin) else None
    except (ImportError, OSError, ValueError):
        saved = None
    try:
        yield
    finally:
        if saved is not None:
            with contextlib.suppress(OSError, ValueError):
                termios.tcsetattr(stdin.fileno(), termios.TCSADRAIN, saved)


async def run_console(settings: Settings, stdin: TextIO = sys.stdin, out: TextIO = sys.stdout,
                      reset: bool = False) -> int:
    """The console until /quit or end of input (exit code 0) or Ctrl-C (130)."""
    logging.getLogger().setLevel(max(logging.WARNING, logging.getLogger().level))
    fresh = remove_demo_database(settings) if reset else None
    secret_key = local_secret_key(settings)
    secret = demo_secret(secret_key)
    app = await open_app(console_settings(settings), secret_key)
    try:
        print_intro(out, secret, await seed_demo_account(app, secret), fresh)
        transport = ConsoleTransport(out)
        runner = await app.start(transport)

        async def handle(line: str) -> None:
            if line.strip() == "/demo":
                await show_demo(app, secret, out)
                return
            try:
                event = to_event(line, transport)
            except ConsoleInputError as error:
                out.write(f"  ({error})\n")
                return
            if event is not None:
                await runner.handle(event)
                await runner.settle()

        async def converse() -> None:
            await handle("/start")
            await read_lines(handle, stdin)

        with terminal_kept(stdin):
            session = asyncio.ensure_future(converse())
            with interrupts_cancel(session) as interrupted:
                try:
                    await session
                except asyncio.CancelledError:
                    if not interrupted[0]:
                        raise
        await app.stop()
    finally:
        await app.close()
    ended_on_a_prompt = is_terminal(stdin)
    out.write(("\n" if ended_on_a_prompt else "") + ("interrupted, bye\n" if interrupted[0] else "bye\n"))
    out.flush()
    return EXIT_INTERRUPTED if interrupted[0] else 0
