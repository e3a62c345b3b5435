"""The `recovery-bot` command as an operator uses it: help, settings errors, accounts, the console."""

from __future__ import annotations

import re
import sqlite3
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def cli(*args: str, env: dict[str, str] | None = None, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-c", "import sys; from bot.cli import main; sys.exit(main())", *args]
    full_env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run(command, capture_output=True, text=True, timeout=120, env=full_env, cwd=cwd)


def test_help_lists_the_commands() -> None:
    result = cli("--help")
    assert result.returncode == 0
    for command in ("console", "db", "accounts", "flows"):
        assert command in result.stdout


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
