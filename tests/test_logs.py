"""Safe logging: the redacting filter on the handlers, and the levels that keep chatty libraries quiet."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.config import load_settings
from bot.logs import (
    CHATTY_LOGGERS,
    REDACTED,
    JsonFormatter,
    SecretFilter,
    configure_logging,
    guard_host_logging,
    hide,
)
from tests.support.chat import Bot
from tests.support.desk import SECRET_KEY
from tests.support.e2e import TOKEN

REAL_SHAPED_TOKEN = "7123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw"
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def output() -> Iterator[io.StringIO]:
    """What a root handler of the process writes; the levels of the loggers involved start unset (an earlier
    start_desk in this process may have set them) and are put back after."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    names = [*CHATTY_LOGGERS, "bot", "flows", "recovery_bot", "elsewhere"]
    levels = {name: logging.getLogger(name).level for name in names}
    for name in names:
        logging.getLogger(name).setLevel(logging.NOTSET)
    root_level = root.level
    root.addHandler(handler)
    yield stream
    root.removeHandler(handler)
    root.setLevel(root_level)
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


def logged_through(guard: SecretFilter, message: str, *args: object, error: BaseException | None = None,
                   formatter: logging.Formatter | None = None, extra: dict[str, Any] | None = None) -> str:
    """What a handler guarded by `guard` writes for one warning (or one exception, with `error`)."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(guard)
    if formatter is not None:
        handler.setFormatter(formatter)
    logger = logging.Logger("somewhere")
    logger.addHandler(handler)
    if error is None:
        logger.warning(message, *args, extra=extra)
    else:
        try:
            raise error
        except type(error):
            logger.exception(message, *args, extra=extra)
    return stream.getvalue()


def test_the_token_is_redacted_in_the_message_its_arguments_and_exception_text() -> None:
    guard = SecretFilter([TOKEN, TOKEN.split(":")[1]])
    assert TOKEN not in logged_through(guard, f"token {TOKEN}")
    assert "TEST-token" not in logged_through(guard, "token part %s", "TEST-token")
    text = logged_through(guard, "calling %s", "it", error=RuntimeError(f"POST https://api.example/bot{TOKEN}/getMe"))
    assert "Traceback" in text and "RuntimeError" in text and "TEST-token" not in text


@pytest.mark.parametrize("leak", [
    "http://127.0.0.1:8081/bot987654:unknown-token/sendMessage",
    "https://api.telegram.org/file/bot987654:unknown-token/photos/file_1.jpg",
    f"the token is {REAL_SHAPED_TOKEN}.",
])
def test_what_has_the_shape_of_a_token_is_redacted_unasked(leak: str) -> None:
    text = logged_through(SecretFilter(), "%s", leak)
    assert "unknown-token" not in text and REAL_SHAPED_TOKEN not in text and REDACTED in text


@pytest.mark.parametrize("secret", [
    "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP",  # a new authenticator key
    "JBSW Y3DP EHPK 3PXP JBSW Y3DP EHPK 3PXP",  # as the enrolment message shows it
    "GEZDGNBVGY3TQOJQ",  # a 16-character backup key
    "otpauth://totp/Acme:ada%40example.com?secret=JBSWY3DPEHPK3PXP&issuer=Acme",
    "postgresql+asyncpg://desk:hunter2hunter2@db.internal/recovery",
    "Authorization: Bearer sms-gateway-token-123",
])
def test_secrets_by_their_shape_are_redacted(secret: str) -> None:
    text = logged_through(SecretFilter(), "sending %s now", secret)
    assert REDACTED in text
    for part in ("JBSWY3DP", "GEZDGNBV", "hunter2", "sms-gateway-token"):
        assert part not in text


@pytest.mark.parametrize("line", [
    "update 123456789 failed",
    "chat 900 blocked the bot",
    "timer 12 (reminder) fires 3 s late",
    "INFO WARNING DEBUG ERROR",
    "webhook request without the right secret token from 127.0.0.1 (and 5 more since the last such line)",
    "postgresql+asyncpg://db.internal/recovery",
])
def test_ordinary_lines_are_left_as_they_are(line: str) -> None:
    assert logged_through(SecretFilter([TOKEN]), "%s", line) == line + "\n"


def test_every_secret_setting_is_redacted_from_what_the_commands_log(output: io.StringIO) -> None:
    secrets = {"smtp_password": "smtp-password-1", "sms_webhook_token": "sms-token-1",
               "account_directory_token": "directory-token-1", "account_directory_signing_key": "directory-key-1",
               "events_signing_key": "events-signing-key-" + "e" * 20}
    settings = load_settings(telegram_bot_token=TOKEN, secret_key=SECRET_KEY, smtp_host="mail.test",
                             smtp_from="desk@acme.test", events_url="https://events.test/in",
                             account_directory_url="https://accounts.test", **secrets)
    configure_logging(settings)
    for secret in (TOKEN, SECRET_KEY, *secrets.values()):
        logging.getLogger("elsewhere").warning("a library prints %s", secret)
    assert output.getvalue() == f"WARNING elsewhere: a library prints {REDACTED}\n" * (2 + len(secrets))


def test_a_bad_format_string_neither_raises_nor_prints_the_arguments() -> None:
    text = logged_through(SecretFilter(), "two %s %s", f"only one: {TOKEN}")
    assert "the arguments did not fit" in text and TOKEN not in text


def test_configure_logging_holds_back_chatty_loggers_at_debug(output: io.StringIO) -> None:
    settings = load_settings(telegram_bot_token=TOKEN, secret_key=SECRET_KEY, log_level="DEBUG")
    logging.getLogger().setLevel(logging.DEBUG)  # under pytest basicConfig does nothing: root has handlers
    configure_logging(settings)
    logging.getLogger("telegram.ext.ExtBot").debug("Calling Bot API endpoint with parameters %s", "{'text': 'x'}")
    logging.getLogger("httpx").info("HTTP Request: POST http://x/bot%s/getMe", TOKEN)
    logging.getLogger("aiosqlite").debug("executing %s", "INSERT ... code")
    logging.getLogger("elsewhere").debug("a library nobody thought of: %s", TOKEN)
    logging.getLogger("flows.runner").debug("ours at debug")
    assert output.getvalue() == (f"DEBUG elsewhere: a library nobody thought of: {REDACTED}\n"
                                 "DEBUG flows.runner: ours at debug\n")


def test_a_mounted_desk_guards_the_hosts_handlers_without_taking_over(output: io.StringIO) -> None:
    root = logging.getLogger()
    root.setLevel(logging.DEBUG)
    handlers = list(root.handlers)
    settings = load_settings(telegram_bot_token=TOKEN, secret_key=SECRET_KEY, log_level="INFO")
    logging.getLogger("aiosqlite").setLevel(logging.ERROR)  # the host keeps this one quieter still
    guard = guard_host_logging(settings)
    hide("webhook-secret-made-later")
    assert root.handlers == handlers and root.level == logging.DEBUG
    assert logging.getLogger("telegram").getEffectiveLevel() == logging.INFO
    assert logging.getLogger("aiosqlite").level == logging.ERROR
    assert logging.getLogger("flows").getEffectiveLevel() == logging.INFO
    logging.getLogger("host").info("host line with %s and webhook-secret-made-later", TOKEN)
    assert output.getvalue() == f"INFO host: host line with {REDACTED} and {REDACTED}\n"
    assert guard in root.handlers[-1].filters


# LOG_FORMAT=json: one JSON object a line, redacted like the text lines.

def json_lines(text: str) -> list[dict[str, Any]]:
    assert text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


def test_a_json_line_carries_the_record_and_the_case_fields_it_was_given() -> None:
    before = datetime.now(UTC)
    text = logged_through(SecretFilter(), "case %d decided", 17, formatter=JsonFormatter(),
                          extra={"case": 17, "step": "review", "outcome": "approved", "update": "tg:100000001"})
    [line] = json_lines(text)
    assert line["level"] == "WARNING" and line["logger"] == "somewhere" and line["message"] == "case 17 decided"
    assert (line["case"], line["step"], line["outcome"], line["update"]) == (17, "review", "approved", "tg:100000001")
    when = datetime.fromisoformat(line["time"])
    assert when.utcoffset() == timedelta(0) and before - timedelta(seconds=1) <= when <= datetime.now(UTC)
    assert "exc" not in line
    [plain] = json_lines(logged_through(SecretFilter(), "nothing more", formatter=JsonFormatter()))
    assert set(plain) == {"time", "level", "logger", "message"}


def test_a_json_line_holds_no_secret_in_its_message_exception_or_fields() -> None:
    guard = SecretFilter([TOKEN, TOKEN.split(":")[1]])
    error = RuntimeError(f"POST https://api.example/bot{TOKEN}/getMe failed for {REAL_SHAPED_TOKEN}")
    text = logged_through(guard, "calling with %s", TOKEN, error=error, formatter=JsonFormatter(),
                          extra={"step": f"token {TOKEN}"})
    [line] = json_lines(text)
    assert isinstance(line["exc"], str) and "Traceback" in line["exc"] and "RuntimeError" in line["exc"]
    assert REDACTED in line["message"] and REDACTED in line["exc"] and REDACTED in line["step"]
    for secret in (TOKEN, "TEST-token", REAL_SHAPED_TOKEN):
        assert secret not in text


def test_the_commands_log_json_lines_with_log_format_json(tmp_path: Path) -> None:
    script = ("import logging; from bot.config import load_settings; from bot.logs import configure_logging; "
              "configure_logging(load_settings()); log = logging.getLogger('flows.review'); "
              "log.warning('case %d approved', 5, extra={'case': 5, 'outcome': 'approved'}); "
              f"log.info('token %s', {TOKEN!r})\n"
              "try:\n    raise ValueError('the Bot API at /bot' + " + repr(TOKEN) + " + '/getMe')\n"
              "except ValueError:\n    log.exception('failed')")
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "LOG_FORMAT": "JSON", "TELEGRAM_BOT_TOKEN": TOKEN}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60,
                            cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = json_lines(result.stderr)
    assert [line["message"] for line in lines] == ["case 5 approved", f"token {REDACTED}", "failed"]
    assert lines[0]["case"] == 5 and lines[0]["outcome"] == "approved" and "ValueError" in lines[2]["exc"]
    assert TOKEN.split(":")[1] not in result.stderr


async def test_each_decided_event_is_one_line_with_its_case_step_and_outcome(
        desk: Bot, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="recovery_bot.events")
    chat = desk.chat()
    await chat.send("/start")
    await chat.tap("Switch to phone verification")
    await chat.send("ada@example.com")
    lines = [r for r in caplog.records if r.name == "recovery_bot.events"]
    assert [(r.step, r.outcome) for r in lines] == [("start:menu", "open"), ("phone:ask_email", "open"),  # type: ignore[attr-defined]
                                                   ("phone:get_code", "open")]
    assert all(r.update.startswith("test:") and r.case for r in lines)  # type: ignore[attr-defined]
    assert "ada@example.com" not in caplog.text  # what the user typed is not logged
