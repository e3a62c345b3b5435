"""`recovery-bot console`: the whole bot in a terminal, on the configured database, with a demo account."""

from __future__ import annotations

import logging
import sys
from typing import TextIO

from bot.app import App, local_secret_key, open_app
from bot.config import Settings
from bot.console import ConsoleInputError, ConsoleTransport, read_lines, to_event
from flows.accounts_csv import import_accounts
from flows.otp import new_secret

DEMO_EMAIL = "demo@example.com"
DEMO_PHONE = "+15550100234"
DEMO_QUESTION = "What was the name of your first pet?"
DEMO_ANSWER = "Rex"


async def seed_demo_account(app: App) -> str | None:
    """On an empty account directory, add a demo account; returns its TOTP secret (None if not seeded)."""
    async with app.store.transaction() as tx:
        if await tx.accounts.count():
            return None
        secret = new_secret()
        rows = ("email,phone,totp_secret,security_question,security_answer\n"
                f"{DEMO_EMAIL},{DEMO_PHONE},{secret},{DEMO_QUESTION},{DEMO_ANSWER}\n")
        report = await import_accounts(tx.accounts, rows, app.services.box, app.clock.now())
        if report.errors:
            raise RuntimeError(f"demo account rejected: {report.errors}")
    return secret


def print_intro(out: TextIO, secret: str | None) -> None:
    out.write("recovery-bot console — type text, a /command, or a button's number; /photo PATH sends a picture.\n"
              "/quit leaves; run it again to continue where you were.\n")
    if secret is not None:
        out.write(
            "\nA demo account was created on this database:\n"
            f"  email:  {DEMO_EMAIL}\n  phone:  {DEMO_PHONE}\n"
            f"  security question: {DEMO_QUESTION}  answer: {DEMO_ANSWER}\n"
            f"  TOTP (backup) key: {secret}\n"
            "  Add the key to an authenticator app, or print the current code with:\n"
            f"  python -c \"import pyotp; print(pyotp.TOTP('{secret}').now())\"\n"
            "Codes for phone and email are shown in the chat (the `chat` delivery channel).\n"
        )
    out.flush()


async def run_console(settings: Settings, stdin: TextIO = sys.stdin, out: TextIO = sys.stdout) -> int:
    logging.getLogger().setLevel(max(logging.WARNING, logging.getLogger().level))
    app = await open_app(settings, local_secret_key(settings))
    try:
        print_intro(out, await seed_demo_account(app))
        transport = ConsoleTransport(out)
        runner = await app.start(transport)

        async def handle(line: str) -> None:
            try:
                event = to_event(line, transport)
            except ConsoleInputError as error:
                out.write(f"  ({error})\n")
                return
            if event is not None:
                await runner.handle(event)
                await runner.settle()

        await handle("/start")
        await read_lines(handle, stdin)
        await app.stop()
    finally:
        await app.close()
    out.write("bye\n")
    return 0
