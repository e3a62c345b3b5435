"""`recovery-bot doctor`: checks what `run` needs, without serving, and prints one row per check.

Each check says ok, warn or FAIL, what it found and, for a problem, the fix. It changes nothing: no migration,
no message, no mail, no SMS, no event; the SQLite write lock is taken and given back at once, and a SQLite file
that does not exist yet is not created. Every line goes through the log's SecretFilter, so no secret setting (nor
anything shaped like a token or a password in a URL) is printed.
"""

from __future__ import annotations

import asyncio
import os
import smtplib
import ssl
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TextIO

import httpx
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from bot.config import Settings
from bot.logs import SecretFilter, secrets_of
from flows.store import tables
from flows.store.database import READ_ONLY, SqlStore, open_database, sqlite_file
from flows.store.migrate import alembic_config
from flows.store.startup import LOCK_WAIT_SECONDS, explain, masked, take_write_lock

TIMEOUT_SECONDS = 5.0  # for each network check: one try each, never a retry
DATABASE_SECONDS = TIMEOUT_SECONDS + LOCK_WAIT_SECONDS  # all the database checks: the lock may be waited for
Status = Literal["ok", "warn", "FAIL"]
OK: Status = "ok"
WARN: Status = "warn"
FAIL: Status = "FAIL"
EXIT_OK, EXIT_PROBLEM, EXIT_CONFIG = 0, 1, 2


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    detail: str
    fix: str = ""


def settings_failed(problems: Sequence[str]) -> list[Check]:
    """One FAIL row per bad setting, as `load_settings` says them ("NAME: why")."""
    rows = []
    for problem in problems:
        name, _, why = problem.partition(": ")
        setting = name if why and name.replace("_", "").isalnum() and name.isupper() else "the settings it names"
        rows.append(Check("settings", FAIL, problem, f"correct {setting} in the environment or .env "
                          "(see .env.example)"))
    return rows


async def diagnose(settings: Settings) -> list[Check]:
    """Every check, in the order printed; the network ones run side by side, each with its own timeout."""
    rows = [Check("settings", OK, "loaded from the environment and .env"), secret_key(settings)]
    if problem := settings.code_delivery_problem():
        rows.append(Check("code delivery", FAIL, *_split_fix(problem)))
    else:
        channels = settings.code_channels()
        shown = "chat" in channels.values()
        rows.append(Check("code delivery", WARN if shown else OK,
                          f"phone codes by {channels['phone']}, email codes by {channels['email']}"
                          + (" (CODE_DELIVERY=chat: for demos and tests only)" if shown else ""),
                          "set SMS_WEBHOOK_URL and SMTP_HOST for a real desk"))
    probes: list[Awaitable[list[Check]]] = [telegram_token(settings), database(settings)]
    if settings.smtp_host:
        probes.append(smtp(settings))
    for name, url in (("SMS gateway", settings.sms_webhook_url), ("account directory", settings.account_directory_url),
                      ("events receiver", settings.events_url)):
        if url:
            probes.append(http_reachable(name, url))
    for found in await asyncio.gather(*probes):
        rows.extend(found)
    return rows


def secret_key(settings: Settings) -> Check:
    if settings.secret_key is None:
        return Check("SECRET_KEY", FAIL, "not set", "set SECRET_KEY to at least 32 characters (openssl rand -hex 32); "
                     "keep it: stored secrets are unreadable without the same key")
    return Check("SECRET_KEY", OK, f"set ({len(settings.secret_key.get_secret_value())} characters)")


async def telegram_token(settings: Settings) -> list[Check]:
    if settings.telegram_bot_token is None:
        return [Check("bot token", FAIL, "TELEGRAM_BOT_TOKEN is not set", "get a token from @BotFather and set it")]
    url = f"{settings.telegram_api_url}/bot{settings.telegram_bot_token.get_secret_value()}/getMe"
    try:
        async with httpx.AsyncClient(timeout=TIMEOUT_SECONDS) as client:
            response = await client.get(url)
    except httpx.HTTPError as error:
        return [Check("bot token", FAIL, f"cannot reach the Bot API at {settings.telegram_api_url}: "
                      f"{_reason(error)}", "check the network (a firewall or proxy?) and TELEGRAM_API_URL")]
    if response.status_code in (401, 404):
        return [Check("bot token", FAIL, f"the Bot API refused TELEGRAM_BOT_TOKEN (HTTP {response.status_code})",
                      "check the token with @BotFather (/mybots, API Token)")]
    try:
        username = response.json()["result"]["username"]
    except (ValueError, KeyError, TypeError):
        return [Check("bot token", FAIL, f"getMe answered HTTP {response.status_code} without a bot",
                      "check that TELEGRAM_API_URL is a Bot API server")]
    return [Check("bot token", OK, f"@{username} at {settings.telegram_api_url}")]


async def database(settings: Settings) -> list[Check]:
    """Reachable, its schema against this version's migrations, writable, and the admins known to it."""
    url = settings.database_url
    path = sqlite_file(url)
    if path is not None and not path.exists():
        folder = _nearest_folder(path)
        if not os.access(folder, os.W_OK):
            return [Check("database", FAIL, f"no SQLite database at {path}, and {folder} is not writable",
                          "set DATABASE_URL to a file in a folder this user can write")]
        return [Check("database", WARN, f"no SQLite database at {path} yet",
                      "run `recovery-bot db upgrade` to create it (run does too)")]
    engine = open_database(url)
    try:
        return await asyncio.wait_for(_database_checks(settings, engine), DATABASE_SECONDS)
    except TimeoutError:
        return [Check("database", FAIL, f"{_where(url)} did not answer within {DATABASE_SECONDS:g} s",
                      "check that the server is up, reachable from here, and DATABASE_URL is right")]
    except Exception as error:
        detail, fix = _split_fix(explain(url, error))
        return [Check("database", FAIL, detail, fix)]
    finally:
        await engine.dispose()


async def _database_checks(settings: Settings, engine: AsyncEngine) -> list[Check]:
    url = settings.database_url
    async with engine.connect() as conn:
        await conn.execution_options(**{READ_ONLY: True})  # on SQLite a plain BEGIN: no write lock held here
        await conn.execute(text("SELECT 1"))
        current = set(await conn.run_sync(_current_revisions))
        writable = await _writable(conn, url)
    rows = [Check("database", OK, f"{_where(url)} answers"), _migrations(url, current), writable]
    if current:
        rows.append(await _admins(settings, SqlStore(engine)))
    return rows


def _current_revisions(conn: Connection) -> Sequence[str]:
    return MigrationContext.configure(conn).get_current_heads()


def _migrations(url: str, current: set[str]) -> Check:
    scripts = ScriptDirectory.from_config(alembic_config(url))
    heads = set(scripts.get_heads())
    at = ", ".join(sorted(current)) or "none"
    if current == heads:
        return Check("migrations", OK, f"at the newest revision ({at})")
    known = {script.revision for script in scripts.walk_revisions()}
    if not current <= known:
        return Check("migrations", FAIL, f"at revision {at}, which this version does not know (a newer version "
                     "migrated it)", "upgrade recovery-bot, or use another DATABASE_URL")
    behind = len(list(scripts.iterate_revisions(",".join(sorted(heads)), ",".join(sorted(current)) or "base")))
    return Check("migrations", WARN, f"at revision {at}: {behind} behind the newest ({', '.join(sorted(heads))})",
                 "run `recovery-bot db upgrade` (run applies them at start too)")


async def _writable(conn: AsyncConnection, url: str) -> Check:
    path = sqlite_file(url)
    if path is not None:
        await conn.rollback()  # end the read so that the snapshot it holds does not stand in the lock's way
        try:
            await asyncio.to_thread(take_write_lock, path)
        except Exception as error:
            detail, fix = _split_fix(explain(url, error))
            return Check("writable", FAIL, detail, fix)
        return Check("writable", OK, "took and gave back the write lock")
    read_only = (await conn.execute(text("SHOW transaction_read_only"))).scalar_one()
    if read_only == "on":
        return Check("writable", FAIL, "the server takes reads only (a standby, or default_transaction_read_only)",
                     "point DATABASE_URL at the primary, or let this user write")
    present = set(await conn.run_sync(lambda sync: inspect(sync).get_table_names()))
    denied = []
    for table in sorted(present & set(tables.metadata.tables)):
        query = text("SELECT has_table_privilege(current_user, :table, 'INSERT, UPDATE, DELETE')")
        if not (await conn.execute(query, {"table": table})).scalar_one():
            denied.append(table)
    if denied:
        return Check("writable", FAIL, f"this user may not write to {', '.join(denied)}",
                     "GRANT INSERT, UPDATE, DELETE on the desk's tables to the user in DATABASE_URL")
    return Check("writable", OK, "the server takes writes, and this user may write every table")


async def _admins(settings: Settings, store: SqlStore) -> Check:
    admins = settings.admin_ids
    if not admins:
        return Check("admins", WARN, "ADMIN_IDS is empty: nobody can review Method 2 requests",
                     "set ADMIN_IDS to the staff's Telegram user ids")
    async with store.reading() as tx:
        known = await tx.users.known(admins)
    silent = [str(admin) for admin in admins if admin not in known]
    if silent:
        return Check("admins", WARN, f"{', '.join(silent)} never opened the bot: it cannot write to them",
                     "ask each to send /start to the bot (their review cards wait in /queue)")
    return Check("admins", OK, f"every admin ({len(admins)}) has opened the bot")


async def smtp(settings: Settings) -> list[Check]:
    assert settings.smtp_host is not None
    where = f"{settings.smtp_host}:{settings.smtp_port} ({settings.smtp_security})"
    try:
        said = await asyncio.to_thread(_smtp_probe, settings)
    except (OSError, smtplib.SMTPException) as error:
        if isinstance(error, smtplib.SMTPAuthenticationError):
            return [Check("SMTP", FAIL, f"{where} refused the login ({error.smtp_code})",
                          "check SMTP_USERNAME and SMTP_PASSWORD")]
        if isinstance(error, smtplib.SMTPNotSupportedError):
            return [Check("SMTP", FAIL, f"{where}: {error}", "check SMTP_SECURITY (starttls, ssl or none) and "
                          "SMTP_USERNAME for this server")]
        return [Check("SMTP", FAIL, f"cannot reach {where}: {_reason(error)}",
                      "check SMTP_HOST, SMTP_PORT, SMTP_SECURITY and that the server is up")]
    return [Check("SMTP", OK, f"{where} {said}")]


def _smtp_probe(settings: Settings) -> str:
    """Connect, EHLO, STARTTLS as configured and log in when a user is set; no mail is sent."""
    assert settings.smtp_host is not None
    host, port = settings.smtp_host, settings.smtp_port
    client = (smtplib.SMTP_SSL(host, port, timeout=TIMEOUT_SECONDS, context=ssl.create_default_context())
              if settings.smtp_security == "ssl" else smtplib.SMTP(host, port, timeout=TIMEOUT_SECONDS))
    with client:
        client.ehlo()
        if settings.smtp_security == "starttls":
            client.starttls(context=ssl.create_default_context())
            client.ehlo()
        if settings.smtp_username is not None:
            password = settings.smtp_password.get_secret_value() if settings.smtp_password else ""
            client.login(settings.smtp_username, password)
            return "answered EHLO and took the login"
    return "answered EHLO"


async def http_reachable(name: str, url: str) -> list[Check]:
    """A HEAD request: any answer shows the server is there (nothing is sent to act on); 5xx is a warning."""
    where = masked(url)
    try:
        async with httpx.AsyncClient(timeout=TIMEOUT_SECONDS) as client:
            response = await client.head(url)
    except httpx.HTTPError as error:
        return [Check(name, FAIL, f"cannot reach {where}: {_reason(error)}",
                      "check the URL, the network and that the service is up")]
    if response.status_code >= 500:
        return [Check(name, WARN, f"{where} answered HEAD with HTTP {response.status_code}",
                      "check the service's health")]
    return [Check(name, OK, f"{where} answers (HTTP {response.status_code} to HEAD)")]


def _reason(error: BaseException) -> str:
    reason = str(error).strip().splitlines()
    return reason[0][:200] if reason and reason[0] else type(error).__name__


def _split_fix(line: str) -> tuple[str, str]:
    """`explain`'s one line as (what is wrong, the fix): the fix follows its last "; " (or else ": ")."""
    for separator in ("; ", ": "):
        if separator in line:
            detail, fix = line.rsplit(separator, 1)
            return detail, fix
    return line, "see README, If it does not start"


def _where(url: str) -> str:
    path = sqlite_file(url)
    return f"SQLite {path}" if path is not None else masked(url)


def _nearest_folder(path: Path) -> Path:
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder


def print_table(rows: Sequence[Check], redact: Callable[[str], str], out: TextIO = sys.stdout) -> None:
    width = max(len("check"), *(len(row.name) for row in rows))
    print(f"{'check':<{width}}  status  detail", file=out)
    for row in rows:
        print(redact(f"{row.name:<{width}}  {row.status:<6}  {row.detail}"), file=out)
        if row.status != OK and row.fix:
            print(redact(f"{'':<{width}}  {'':<6}  fix: {row.fix}"), file=out)


def exit_code(rows: Sequence[Check]) -> int:
    return EXIT_PROBLEM if any(row.status == FAIL for row in rows) else EXIT_OK


async def run_doctor(settings: Settings) -> int:
    rows = await diagnose(settings)
    print_table(rows, SecretFilter(secrets_of(settings)).redact)
    return exit_code(rows)


def report_bad_settings(problems: Sequence[str]) -> int:
    print_table(settings_failed(problems), SecretFilter().redact)
    return EXIT_CONFIG
