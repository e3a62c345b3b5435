"""The `recovery-bot` command as an operator uses it: help, settings errors, start-up failures, accounts, the
console."""

from __future__ import annotations

import os
import re
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def cli(*args: str, env: dict[str, str] | None = None, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-c", "import sys; from bot.entry import main; sys.exit(main())", *args]
    full_env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run(command, capture_output=True, text=True, timeout=120, env=full_env, cwd=cwd)


def test_help_lists_the_commands() -> None:
    result = cli("--help")
    assert result.returncode == 0
    for command in ("console", "doctor", "db", "accounts", "flows"):
        assert command in result.stdout


def test_ctrl_c_while_the_libraries_load_leaves_quietly() -> None:
    """SIGINT in the first half second lands inside an import; simulated here where it happened, at SQLAlchemy."""
    interrupt_at_sqlalchemy = (
        "import sys\n"
        "class Interrupt:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'sqlalchemy':\n"
        "            raise KeyboardInterrupt\n"
        "sys.meta_path.insert(0, Interrupt())\n"
        "from bot.entry import main\n"
        "sys.exit(main())\n")
    result = subprocess.run([sys.executable, "-c", interrupt_at_sqlalchemy, "console"], capture_output=True,
                            text=True, timeout=60, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}, cwd=ROOT)
    assert result.returncode == 130
    assert "Traceback" not in result.stderr and "interrupted" in result.stderr


def test_version_is_the_installed_distributions() -> None:
    from importlib.metadata import version

    result = cli("--version")
    assert result.returncode == 0 and result.stdout == f"recovery-bot {version('recovery-bot')}\n"
    assert re.fullmatch(r"recovery-bot \d+\.\d+\.\d+\n", result.stdout)


def test_a_bad_setting_is_one_clear_line_and_exit_2(tmp_path: Path) -> None:
    result = cli("db", "upgrade", env={"CODE_TTL_MINUTES": "soon", "ADMIN_IDS": "alice"}, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert "CODE_TTL_MINUTES" in result.stderr and "ADMIN_IDS" in result.stderr


def test_accounts_import_and_list(tmp_path: Path) -> None:
    env = {"DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/r.db", "SECRET_KEY": "k" * 40}
    good = tmp_path / "good.csv"
    good.write_text("email,phone,totp_secret,security_question,security_answer\n"
                    "jane@example.com,+15551234534,JBSWY3DPEHPK3PXP,Pet?,Rex\n")
    first = cli("accounts", "import", str(good), env=env, cwd=tmp_path)
    assert first.returncode == 0 and "1 created" in first.stdout
    again = cli("accounts", "import", str(good), env=env, cwd=tmp_path)
    assert "1 unchanged" in again.stdout
    bad = tmp_path / "bad.csv"
    bad.write_text("email,phone,totp_secret,security_question,security_answer\nnot-an-email,,,,\n")
    refused = cli("accounts", "import", str(bad), env=env, cwd=tmp_path)
    assert refused.returncode == 1 and "bad.csv:2:" in refused.stderr
    listing = cli("accounts", "list", env=env, cwd=tmp_path)
    assert "j•••@example.com" in listing.stdout and "jane@" not in listing.stdout


def test_accounts_import_keeps_what_the_desk_changed_unless_told_to_overwrite(tmp_path: Path) -> None:
    env = {"DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/r.db", "SECRET_KEY": "k" * 40}
    good = tmp_path / "good.csv"
    good.write_text("email,phone,totp_secret,security_question,security_answer\n"
                    "jane@example.com,+15551234534,JBSWY3DPEHPK3PXP,Pet?,Rex\n")
    assert cli("accounts", "import", str(good), env=env, cwd=tmp_path).returncode == 0
    with sqlite3.connect(tmp_path / "r.db") as conn:  # as a staff-approved 2FA reset leaves the row
        conn.execute("UPDATE accounts SET two_factor = 'none', totp_secret_enc = NULL, desk_changed_at = imported_at")
    kept = cli("accounts", "import", str(good), env=env, cwd=tmp_path)
    assert kept.returncode == 0 and "0 unchanged, 1 kept the desk's changes" in kept.stdout
    assert f"{good}:2: j•••@example.com: changed by the desk" in kept.stdout
    assert "again with --overwrite-desk-changes" in kept.stdout
    assert "jane@" not in kept.stdout and "JBSW" not in kept.stdout
    overwritten = cli("accounts", "import", "--overwrite-desk-changes", str(good), env=env, cwd=tmp_path)
    assert overwritten.returncode == 0 and "1 updated" in overwritten.stdout
    assert f"{good}:2: j•••@example.com: overwrote" in overwritten.stdout
    assert "--overwrite-desk-changes" in cli("accounts", "import", "--help").stdout


def test_accounts_import_refuses_without_a_secret_key(tmp_path: Path) -> None:
    good = tmp_path / "good.csv"
    good.write_text("email,phone,totp_secret,security_question,security_answer\n"
                    "jane@example.com,+15551234534,JBSWY3DPEHPK3PXP,Pet?,Rex\n")
    result = cli("accounts", "import", str(good), env={"DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/r.db"},
                 cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "SECRET_KEY is not set" in result.stderr
    assert not (tmp_path / "r.db").exists() and not (tmp_path / "console-secret-key").exists()


def test_flows_diagram_prints_mermaid() -> None:
    result = cli("flows", "diagram")
    assert result.returncode == 0 and result.stdout.count("```mermaid") == 4


# Start-up failures: each is one line on stderr naming the cause and the fix, and exit code 2, never a traceback.

TOKEN = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw1"
RUN_ENV = {"TELEGRAM_BOT_TOKEN": TOKEN, "SECRET_KEY": "k" * 40, "CODE_DELIVERY": "chat"}


def refusal(result: subprocess.CompletedProcess[str]) -> str:
    """The one line a refused start ends with, after checking that it is one: exit code 2, no traceback."""
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and result.stderr.endswith("\n")
    last = result.stderr.splitlines()[-1]
    assert last.startswith("recovery-bot: ")
    return last


def test_a_synchronous_database_url_is_refused_with_the_asyncio_form(tmp_path: Path) -> None:
    sqlite = cli("db", "upgrade", env={"DATABASE_URL": "sqlite:///./data/r.db"}, cwd=tmp_path)
    assert sqlite.stderr.count("\n") == 1
    assert "DATABASE_URL" in refusal(sqlite) and "sqlite+aiosqlite:///./data/r.db" in sqlite.stderr
    postgres = cli("db", "upgrade", env={"DATABASE_URL": "postgresql://desk:hunter2@db.internal/recovery"},
                   cwd=tmp_path)
    assert postgres.stderr.count("\n") == 1
    assert "postgresql+asyncpg://desk:***@db.internal/recovery" in refusal(postgres)
    assert "hunter2" not in postgres.stderr
    assert not (tmp_path / "data").exists()


def test_a_database_the_bot_does_not_support_is_refused(tmp_path: Path) -> None:
    result = cli("accounts", "list", env={"DATABASE_URL": "mysql+aiomysql://desk:hunter2@db/recovery"}, cwd=tmp_path)
    line = refusal(result)
    assert result.stderr.count("\n") == 1 and "not supported" in line and "sqlite+aiosqlite:///PATH" in line
    assert "hunter2" not in line


def test_a_missing_postgresql_driver_says_what_to_install(tmp_path: Path) -> None:
    shadow = tmp_path / "no-asyncpg" / "asyncpg"  # an asyncpg that fails to import, as when it is not installed
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ModuleNotFoundError(\"No module named 'asyncpg'\", name='asyncpg')\n")
    env = {"DATABASE_URL": "postgresql+asyncpg://desk:hunter2@127.0.0.1/recovery",
           "PYTHONPATH": f"{shadow.parent}:{ROOT}"}
    result = cli("db", "upgrade", env=env, cwd=tmp_path)
    assert result.stderr.count("\n") == 1
    assert "pip install 'recovery-bot[postgres]'" in refusal(result)


def test_a_postgresql_server_that_does_not_answer_is_named_without_its_password(tmp_path: Path) -> None:
    with closed_port() as port:
        result = cli("db", "upgrade", env={"DATABASE_URL": f"postgresql+asyncpg://desk:hunter2@127.0.0.1:{port}/r"},
                     cwd=tmp_path)
    line = refusal(result)
    assert result.stderr.count("\n") == 1
    assert f"cannot open the database postgresql+asyncpg://desk:***@127.0.0.1:{port}/r" in line
    assert "hunter2" not in result.stderr


def test_a_sqlite_file_that_cannot_be_created_is_named(tmp_path: Path) -> None:
    # Under a regular file: no folder can be made there, even by root (as CI runs).
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    env = {"DATABASE_URL": f"sqlite+aiosqlite:///{blocker}/r.db", "SECRET_KEY": "k" * 40}
    for command in (("db", "upgrade"), ("accounts", "list")):
        result = cli(*command, env=env, cwd=tmp_path)
        assert result.stderr.count("\n") == 1
        assert f"cannot create the SQLite database {blocker}/r.db: {blocker} is not a folder" in refusal(result)


def test_the_console_says_where_it_cannot_keep_its_local_key(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    result = cli("console", env={"DATABASE_URL": f"sqlite+aiosqlite:///{blocker}/r.db"}, cwd=tmp_path)
    assert result.stderr.count("\n") == 1
    assert "cannot keep a local SECRET_KEY" in refusal(result) and "set SECRET_KEY" in result.stderr


def test_a_database_locked_by_another_process_is_said_to_be_in_use(tmp_path: Path) -> None:
    env = {"DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/r.db", "SECRET_KEY": "k" * 40}
    assert cli("db", "upgrade", env=env, cwd=tmp_path).returncode == 0
    other = sqlite3.connect(tmp_path / "r.db", isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        result = cli("accounts", "list", env=env, cwd=tmp_path)
    finally:
        other.close()
    assert result.stderr.count("\n") == 1
    assert f"the database {tmp_path}/r.db is in use by another process" in refusal(result)
    assert cli("accounts", "list", env=env, cwd=tmp_path).returncode == 0  # once it lets go, all is well


def test_a_read_only_database_is_one_line_naming_the_fix(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("a read-only mount needs root (CI runs as root); as root, file modes do not stop writes")
    folder, view = tmp_path / "data", tmp_path / "read-only"
    folder.mkdir()
    view.mkdir()
    migrated = cli("db", "upgrade", env={"DATABASE_URL": f"sqlite+aiosqlite:///{folder}/r.db"}, cwd=tmp_path)
    assert migrated.returncode == 0
    subprocess.run(["mount", "--bind", str(folder), str(view)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(view)], check=True)
        env = {"DATABASE_URL": f"sqlite+aiosqlite:///{view}/r.db", "SECRET_KEY": "k" * 40}
        result = cli("accounts", "list", env=env, cwd=tmp_path)
    finally:
        subprocess.run(["umount", str(view)], check=True)
    assert result.stderr.count("\n") == 1
    assert "read-only" in refusal(result) and "writable" in result.stderr


def test_a_database_migrated_by_a_newer_version_is_refused(tmp_path: Path) -> None:
    env = {"DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/r.db"}
    assert cli("db", "upgrade", env=env, cwd=tmp_path).returncode == 0
    with sqlite3.connect(tmp_path / "r.db") as newer:
        newer.execute("UPDATE alembic_version SET version_num = 'f00dfeedbeef'")
    result = cli("db", "upgrade", env=env, cwd=tmp_path)
    assert result.stderr.count("\n") == 1
    line = refusal(result)
    assert "schema revision f00dfeedbeef" in line and "upgrade recovery-bot" in line


@pytest.mark.parametrize("framework", ["ptb", "aiogram"])
def test_an_unreachable_bot_api_is_tried_three_times_then_refused_without_the_token(
        tmp_path: Path, framework: str) -> None:
    with closed_port() as port:
        env = {**RUN_ENV, "BOT_FRAMEWORK": framework, "TELEGRAM_API_URL": f"http://127.0.0.1:{port}",
               "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/r.db"}
        result = cli("run", env=env, cwd=tmp_path)
    line = refusal(result)
    assert line.startswith(f"recovery-bot: cannot reach the Telegram Bot API at http://127.0.0.1:{port}: ")
    retries = result.stderr.splitlines()[:-1]
    assert len(retries) == 2 and "try 1 of 3" in retries[0] and "try 2 of 3" in retries[1]
    assert TOKEN.split(":")[1] not in result.stderr
    assert not (tmp_path / "r.db").exists()  # nothing is opened before Telegram answers


@contextmanager
def closed_port() -> Iterator[int]:
    """A local TCP port that refuses connections: bound (so nothing else takes it) but not listening."""
    with socket.socket() as bound:
        bound.bind(("127.0.0.1", 0))
        yield bound.getsockname()[1]
