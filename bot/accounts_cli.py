"""`recovery-bot accounts import FILE.csv` and `recovery-bot accounts list`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bot.app import App, local_secret_key, open_app
from bot.config import Settings
from flows.accounts_csv import ImportReport, import_accounts
from flows.directory import mask_email, mask_phone
from flows.table_directory import TableDirectory

EXIT_CONFIG = 2


async def run_accounts(args: argparse.Namespace, settings: Settings) -> int:
    if args.accounts_command == "import" and settings.secret_key is None:
        # A generated local key would encrypt the secrets with a key that `run` does not have.
        print("recovery-bot: SECRET_KEY is not set: the import encrypts authenticator secrets with it and `run` "
              "needs the same key to read them; set it first (try: openssl rand -hex 32)", file=sys.stderr)
        return EXIT_CONFIG
    app = await open_app(settings, local_secret_key(settings))
    try:
        if args.accounts_command == "import":
            return await _import(app, args)
        return await _list(app)
    finally:
        await app.close()


async def _import(app: App, args: argparse.Namespace) -> int:
    try:
        content = args.file.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        print(f"recovery-bot: cannot read {args.file}: {error}", file=sys.stderr)
        return 1
    assert app.services is not None  # the CLI's app always has its services
    async with app.store.transaction() as tx:
        report = await import_accounts(tx.accounts, content, app.services.box, app.clock.now(),
                                       overwrite_desk_changes=args.overwrite_desk_changes)
    if report.errors:
        for line, message in report.errors:
            print(f"{args.file}:{line}: {message}", file=sys.stderr)
        print("nothing was imported: fix the lines above and run the import again", file=sys.stderr)
        return 1
    print("\n".join(import_summary(report, args.file)))
    return 0


def import_summary(report: ImportReport, file: Path) -> list[str]:
    """What the operator reads after an import that went through: the counts, then every row where the file and
    the desk disagreed (line and masked email only)."""
    kept = f", {len(report.kept)} kept the desk's changes" if report.kept else ""
    lines = [f"imported: {report.created} created, {report.updated} updated, {report.unchanged} unchanged{kept}"]
    lines += [f"{file}:{line}: {email}: changed by the desk since its last import: kept the desk's phone, "
              "authenticator and 2FA method (the other columns were imported)" for line, email in report.kept]
    if report.kept:
        lines.append("to let the file win for these rows, run the import again with --overwrite-desk-changes")
    lines += [f"{file}:{line}: {email}: overwrote what the desk had changed since the last import"
              for line, email in report.overwritten]
    return lines


async def _list(app: App) -> int:
    assert app.services is not None
    async with app.store.reading() as tx:
        found = await TableDirectory(tx.accounts, app.services.box, app.clock.now()).list_accounts()
    for account in found:
        phone = mask_phone(account.phone) if account.phone else "-"
        print(f"{account.id:>6}  {mask_email(account.email):<32} {phone:<16} 2FA: {account.two_factor}"
              f"{'  verified' if account.identity_verified else ''}")
    print(f"{len(found)} account(s)")
    return 0
