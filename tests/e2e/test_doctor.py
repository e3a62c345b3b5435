"""`recovery-bot doctor` as an operator runs it before the first start: against a local Bot API server, a real
SQLite file, a real SMTP server and an SMS gateway; once with everything right, once with a handful wrong."""

from __future__ import annotations

import asyncio
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy.engine import make_url

from flows.events import Sender
from flows.store.database import SqlStore, open_database
from flows.store.migrate import upgrade
from tests.e2e.test_cli import closed_port
from tests.support.botapi import BotApiServer
from tests.support.desk import SECRET_KEY
from tests.support.e2e import ADMIN, TOKEN
from tests.support.postgres import PostgresServer
from tests.support.servers import Mailbox, SmsGateway

ROOT = Path(__file__).resolve().parents[2]
SMTP_PASSWORD = "s3cret"  # what the local SMTP server takes (tests/support/servers.py)
SIGNING_KEY = "e" * 40


@dataclass
class Row:
    status: str
    detail: str
    fix: str = ""


@dataclass
class Report:
    code: int
    output: str
    rows: dict[str, list[Row]]

    def status(self, check: str) -> str:
        statuses = {row.status for row in self.rows[check]}
        assert len(statuses) == 1, self.output
        return statuses.pop()


async def doctor(folder: Path, **env: str) -> Report:
    """Run `recovery-bot doctor` in `folder` (no .env there) and read its table back, check by check."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "import sys; from bot.cli import main; sys.exit(main())", "doctor",
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), **env}, cwd=folder,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(process.communicate(), 60)
    output = out.decode()
    header, *lines = output.splitlines()
    assert header.split() == ["check", "status", "detail"], output
    rows: dict[str, list[Row]] = {}
    last: Row | None = None
    for line in lines:
        if line.startswith(" "):
            assert last is not None and line.strip().startswith("fix: "), output
            last.fix = line.strip().removeprefix("fix: ")
            continue
        name, status, detail = _columns(line)
        last = Row(status, detail)
        rows.setdefault(name, []).append(last)
    assert process.returncode is not None
    return Report(process.returncode, output, rows)


def _columns(line: str) -> tuple[str, str, str]:
    """A row is `check  status  detail`, columns two spaces apart; a check's name may hold one space."""
    name, rest = line.split("  ", 1)
    status, _, detail = rest.strip().partition(" ")
    return name.strip(), status, detail.strip()


async def database_with_admin(url: str, revision: str = "head", *admins: int) -> None:
    await upgrade(url, revision)
    engine = open_database(url)
    try:
        async with SqlStore(engine).transaction() as tx:
            await tx.users.touch([Sender(admin, admin) for admin in admins], datetime.now(UTC))
    finally:
        await engine.dispose()


async def test_a_healthy_setup_passes_every_check(server: BotApiServer, mailbox: Mailbox, gateway: SmsGateway,
                                                  tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/desk.db"
    await database_with_admin(url, "head", ADMIN)
    sms = await gateway.start()
    report = await doctor(
        tmp_path, TELEGRAM_BOT_TOKEN=TOKEN, TELEGRAM_API_URL=server.url, DATABASE_URL=url, SECRET_KEY=SECRET_KEY,
        ADMIN_IDS=str(ADMIN), SMTP_HOST="127.0.0.1", SMTP_PORT=str(mailbox.port), SMTP_SECURITY="none",
        SMTP_FROM="desk@acme.test", SMTP_USERNAME="desk", SMTP_PASSWORD=SMTP_PASSWORD, SMS_WEBHOOK_URL=sms,
        SMS_WEBHOOK_TOKEN="sms-gateway-token", ACCOUNT_DIRECTORY_URL=sms, ACCOUNT_DIRECTORY_TOKEN="directory-token",
        EVENTS_URL=sms, EVENTS_SIGNING_KEY=SIGNING_KEY)
    assert report.code == 0, report.output
    expected = {"settings", "SECRET_KEY", "code delivery", "bot token", "database", "migrations", "writable",
                "admins", "SMTP", "SMS gateway", "account directory", "events receiver"}
    assert set(report.rows) == expected, report.output
    assert all(report.status(check) == "ok" for check in expected), report.output
    assert "@acme_desk_bot" in report.rows["bot token"][0].detail
    assert [call.method for call in server.calls] == ["getMe"]
    assert mailbox.logins == [(b"desk", SMTP_PASSWORD.encode())] and mailbox.received == []  # logged in, sent nothing
    assert gateway.received == []  # no SMS
    for secret in (TOKEN.split(":")[1], SECRET_KEY, SMTP_PASSWORD, "sms-gateway-token", "directory-token", SIGNING_KEY):
        assert secret not in report.output


async def test_a_broken_setup_fails_and_names_a_fix_for_each_problem(server: BotApiServer, tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/desk.db"
    await database_with_admin(url, "0009")  # one migration behind, and no admin has written yet
    wrong_token = "123456:WRONG-token"
    with closed_port() as smtp_port:
        report = await doctor(
            tmp_path, TELEGRAM_BOT_TOKEN=wrong_token, TELEGRAM_API_URL=server.url, DATABASE_URL=url,
            SECRET_KEY=SECRET_KEY, ADMIN_IDS=str(ADMIN), SMTP_HOST="127.0.0.1", SMTP_PORT=str(smtp_port),
            SMTP_SECURITY="none", SMTP_FROM="desk@acme.test", CODE_DELIVERY="chat")
    assert report.code == 1, report.output
    assert report.status("bot token") == "FAIL"
    assert report.status("SMTP") == "FAIL"
    assert report.status("migrations") == "warn"  # `run` applies them at start
    assert report.status("admins") == "warn" and str(ADMIN) in report.rows["admins"][0].detail
    assert report.status("database") == report.status("writable") == "ok"
    problems = [row for rows in report.rows.values() for row in rows if row.status != "ok"]
    assert len(problems) >= 4 and all(row.fix for row in problems), report.output
    assert "db upgrade" in report.rows["migrations"][0].fix
    assert "WRONG-token" not in report.output


async def test_an_unreachable_postgresql_fails_without_its_password(tmp_path: Path) -> None:
    with closed_port() as port:
        report = await doctor(tmp_path, DATABASE_URL=f"postgresql+asyncpg://desk:hunter2@127.0.0.1:{port}/r",
                              SECRET_KEY=SECRET_KEY, CODE_DELIVERY="chat")
    assert report.code == 1, report.output
    assert report.status("database") == "FAIL" and report.rows["database"][0].fix
    assert f"127.0.0.1:{port}" in report.rows["database"][0].detail
    assert "migrations" not in report.rows and "hunter2" not in report.output


async def test_bad_settings_are_one_row_each_and_exit_2(tmp_path: Path) -> None:
    report = await doctor(tmp_path, CODE_TTL_MINUTES="soon", ADMIN_IDS="alice", SMTP_PASSWORD="pw-never-shown")
    assert report.code == 2, report.output
    assert set(report.rows) == {"settings"} and len(report.rows["settings"]) == 2
    assert all(row.status == "FAIL" and row.fix for row in report.rows["settings"])
    details = " ".join(row.detail for row in report.rows["settings"])
    assert "CODE_TTL_MINUTES" in details and "ADMIN_IDS" in details
    assert "pw-never-shown" not in report.output


async def test_a_migrated_postgresql_is_reachable_current_and_writable_until_it_takes_reads_only(
        postgres: PostgresServer, postgres_url: str, tmp_path: Path) -> None:
    env = {"DATABASE_URL": postgres_url, "SECRET_KEY": SECRET_KEY, "CODE_DELIVERY": "chat", "ADMIN_IDS": str(ADMIN)}
    report = await doctor(tmp_path, **env)
    assert [report.status(check) for check in ("database", "migrations", "writable")] == ["ok", "ok", "ok"]
    assert report.status("admins") == "warn", report.output
    database = make_url(postgres_url).database
    postgres.sql(f"ALTER DATABASE {database} SET default_transaction_read_only = on")  # as on a standby
    read_only = await doctor(tmp_path, **env)
    assert read_only.code == 1 and read_only.status("writable") == "FAIL" and read_only.rows["writable"][0].fix
