"""The `recovery-bot` command."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from importlib.metadata import version
from pathlib import Path

from bot.config import Settings, SettingsError, StartupError, load_settings
from bot.logs import configure_logging
from flows.store.startup import DatabaseProblem

EXIT_CONFIG = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="recovery-bot",
        description="A self-hosted Telegram desk that guides users through 2FA account recovery.",
        epilog="Settings come from the environment and .env (see .env.example). A command that cannot start (a bad "
               "setting, a database it cannot use, the Bot API unreachable) says why in one line and exits with 2.",
    )
    parser.add_argument("--version", action="version", version=f"recovery-bot {version('recovery-bot')}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = commands.add_parser("run", help="serve the desk on Telegram (long polling, or a webhook)")
    run.add_argument("--webhook-url", metavar="URL", help="receive updates by webhook at this public HTTPS URL "
                     "instead of long polling (the URL's path is served)")
    run.add_argument("--port", type=int, default=8080, help="port of the webhook server (default 8080)")
    run.add_argument("--host", default="0.0.0.0", help="address of the webhook server (default 0.0.0.0)")
    console = commands.add_parser(
        "console", help="try the bot in this terminal (offline, on the configured database, with a demo account)",
        description="The whole bot in this terminal, offline, on DATABASE_URL (a demo account is created on an "
                    "empty database, and printed). You are the user: bot> lines; type text, a /command, or a "
                    "button's number (1, 2, ...); /photo PATH sends a picture. You are also the staff member who "
                    "reviews Method 2: staff> lines; type s1, s2, ... for their buttons; staff commands (/queue, "
                    "/case ID, /reject ID reason, /stats, /audit) are sent as staff. /demo puts the demo account "
                    "back as it started and prints it (type it between two methods, then /start). /quit or Ctrl-D "
                    "leaves (exit code 0), Ctrl-C too (130).")
    console.add_argument("--reset", action="store_true",
                         help="start a fresh demo: delete the SQLite database (only one that holds no account but "
                         "the demo's) and create the demo account again")
    commands.add_parser(
        "doctor", help="check the settings, the bot token, the database and the gateways, and say what to fix",
        description="Check what `run` needs, without serving: the settings, SECRET_KEY, the bot token (getMe), the "
                    "database (reachable, migrations, writable), that each admin has opened the bot, and SMTP, the "
                    "SMS gateway, the account directory and the events receiver where set (reachable only: no "
                    "mail, SMS or event is sent). Prints one row per check (ok, warn or FAIL) with the fix for each "
                    "problem. Exit code 0 when nothing failed (warnings allowed), 1 when a check failed, 2 when the "
                    "settings cannot be read.")
    db = commands.add_parser("db", help="database maintenance")
    db_commands = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    db_commands.add_parser("upgrade", help="apply the database migrations")
    copy = db_commands.add_parser(
        "copy", help="copy every table of the configured database into another, empty one, and check it row for row",
        description="Copy every table of DATABASE_URL (which must be migrated to the newest schema) into the database "
                    "at URL, SQLite or PostgreSQL either way: URL is migrated first, refused if it holds any row, "
                    "written in one transaction, and compared with the source row for row.")
    copy.add_argument("--to", required=True, metavar="URL", dest="target",
                      help="the target: sqlite+aiosqlite:///PATH or postgresql+asyncpg://USER:PASSWORD@HOST/DATABASE")
    accounts = commands.add_parser("accounts", help="the service's accounts that users can recover")
    account_commands = accounts.add_subparsers(dest="accounts_command", required=True, metavar="ACTION")
    importer = account_commands.add_parser("import", help="import or update accounts from a CSV file")
    importer.add_argument("file", type=Path, help="CSV with header email,phone,totp_secret,"
                          "security_question,security_answer[,identity_verified]")
    importer.add_argument("--overwrite-desk-changes", action="store_true",
                          help="let the file overwrite the phone, authenticator and 2FA method of accounts the desk "
                          "changed since their last import (by default these are kept and the rows listed)")
    account_commands.add_parser("list", help="list accounts (emails and phones masked)")
    flows = commands.add_parser("flows", help="the recovery flows")
    flow_commands = flows.add_subparsers(dest="flows_command", required=True, metavar="ACTION")
    diagram = flow_commands.add_parser("diagram", help="print every flow as a Mermaid diagram (Markdown)")
    diagram.add_argument("--readme", type=Path, metavar="FILE",
                         help="instead of printing, replace the diagrams between the flows markers in FILE")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "flows":
        from flows.desk import all_flows
        from flows.diagram import diagrams_markdown

        diagrams = diagrams_markdown(all_flows())
        if args.readme is None:
            print(diagrams, end="")
            return 0
        return _update_readme(args.readme, diagrams)
    try:
        settings = load_settings()
    except SettingsError as error:
        if args.command == "doctor":
            from bot.doctor import report_bad_settings

            return report_bad_settings(error.problems)
        print(f"recovery-bot: configuration error: {error}", file=sys.stderr)
        return EXIT_CONFIG
    configure_logging(settings)
    try:
        return asyncio.run(_dispatch(args, settings))
    except KeyboardInterrupt:
        if args.command != "console":
            raise
        print("\ninterrupted, bye")  # Ctrl-C while the console starts or closes
        return 130
    except (StartupError, DatabaseProblem) as error:
        print(f"recovery-bot: {error}", file=sys.stderr)
        return EXIT_CONFIG


async def _dispatch(args: argparse.Namespace, settings: Settings) -> int:
    if args.command == "run":
        from bot.run import Webhook, run_telegram

        webhook = Webhook(args.webhook_url, args.host, args.port) if args.webhook_url else None
        return await run_telegram(settings, webhook)
    if args.command == "doctor":
        from bot.doctor import run_doctor

        return await run_doctor(settings)
    if args.command == "console":
        from bot.console_app import run_console

        return await run_console(settings, reset=args.reset)
    if args.command == "db" and args.db_command == "copy":
        return await _copy_database(settings.database_url, args.target)
    if args.command == "db":
        from flows.store.startup import make_ready

        await make_ready(settings.database_url)
        print("database is up to date")
        return 0
    from bot.accounts_cli import run_accounts

    return await run_accounts(args, settings)


async def _copy_database(source_url: str, target_url: str) -> int:
    from flows.store.copy import CopyFailed, copy_database

    try:
        copied = await copy_database(source_url, target_url)
    except CopyFailed as error:
        print(f"recovery-bot: {error}", file=sys.stderr)
        return 1
    for table in copied:
        print(f"{table.name}: {table.rows} {'row' if table.rows == 1 else 'rows'}")
    total = sum(table.rows for table in copied)
    print(f"copied {total} rows in {len(copied)} tables, checked row for row")
    return 0


BEGIN, END = "<!-- flows:begin -->\n", "<!-- flows:end -->"


def _update_readme(path: Path, diagrams: str) -> int:
    content = path.read_text()
    if BEGIN not in content or END not in content:
        print(f"recovery-bot: {path} has no {BEGIN.strip()} … {END} section", file=sys.stderr)
        return 1
    head, rest = content.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    path.write_text(head + BEGIN + diagrams + END + tail)
    return 0


if __name__ == "__main__":
    sys.exit(main())
