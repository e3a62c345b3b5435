"""Safe logging: no secret reaches a log handler, at any level.

Two layers, because neither is enough alone:

- **Levels.** Codes are six digits, and a six-digit number cannot be told from an id by its shape, so codes and
  user messages are kept out by never logging them: none of our loggers does, and the third-party loggers that
  write request bodies, updates or URLs (`CHATTY_LOGGERS`) are held at a level where they do not, even when
  LOG_LEVEL is DEBUG.
- **A filter on the handlers** (`SecretFilter`), so it also covers loggers nobody thought of and exception
  text: it replaces the secrets it is given (the bot token and the other secret settings) and whatever has
  the shape of a Bot API URL, a bot token, a password in a URL, a bearer token or an authenticator secret.

`configure_logging` sets both up for the `recovery-bot` commands; `guard_host_logging` for a desk mounted in
someone else's bot (see there for what it leaves alone). With LOG_FORMAT=json the commands write one JSON object
a line (`JsonFormatter`); the filter has redacted each record before any formatter sees it.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from pydantic import SecretStr

from bot.config import Settings

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# What a log call may pass with `extra=` for a JSON line to carry as its own fields (and the filter to redact).
EXTRA_FIELDS = ("case", "step", "outcome", "update")
OUR_LOGGERS = ("bot", "flows", "recovery_bot")

# The least level at which each of these writes nothing secret.
CHATTY_LOGGERS: dict[str, int] = {
    "telegram": logging.INFO,  # DEBUG: the API URL with the token, every call's parameters and result, updates
    "httpx": logging.WARNING,  # INFO: every request's URL, and Bot API URLs contain the token
    "httpcore": logging.WARNING,  # DEBUG: every request's and response's headers
    "hpack": logging.WARNING,  # DEBUG (httpx over HTTP/2): every header, Authorization included
    "aiogram": logging.INFO,  # DEBUG: aiogram.scene writes the FSM data of a host's scenes
    "aiosqlite": logging.INFO,  # DEBUG: every statement with its parameters (outbox rows hold codes)
    "sqlalchemy.engine": logging.WARNING,  # INFO: every statement; DEBUG: every row read
}

REDACTED = "[redacted]"
_SHAPES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"(/bot)\d+:[^/\s'\"]+"), rf"\1{REDACTED}"),  # /bot<token>/… and /file/bot<token>/…
    (re.compile(r"(?<![\w-])\d{5,}:[\w-]{30,}"), REDACTED),  # a bot token anywhere else
    (re.compile(r"(://[^\s:/@]+:)[^\s@/]+@"), rf"\1{REDACTED}@"),  # a password in a URL (DATABASE_URL)
    (re.compile(r"(Bearer\s+)[^\s'\",]+", re.IGNORECASE), rf"\1{REDACTED}"),
    (re.compile(r"otpauth://[^\s'\"]+"), f"otpauth://{REDACTED}"),  # what the enrolment QR code holds
    (re.compile(r"(?<![A-Za-z0-9])[A-Z2-7]{4}(?: [A-Z2-7]{4}){3,}(?![A-Za-z0-9])"), REDACTED),  # a key as shown
    (re.compile(r"(?<![A-Za-z0-9])[A-Z2-7]{16,}=*(?![A-Za-z0-9])"), REDACTED),  # base32: authenticator keys
)
_SHORTEST_SECRET = 4  # replacing anything shorter would shred the log and hide nothing worth hiding


class SecretFilter(logging.Filter):
    """Rewrites each record it sees so that no known secret, and nothing shaped like one, is left in it.

    Install it on handlers (`handler.addFilter`), not loggers: a logger's filters do not see the records that
    propagate to it from child loggers. It renders the message with its arguments and replaces both, so a
    secret passed as an argument is caught, and it renders the exception and stack text for the same reason.
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self._secrets: set[str] = set()
        for secret in secrets:
            self.hide(secret)

    def hide(self, secret: str) -> None:
        """Redact `secret` from now on (for secrets made after start-up, like the webhook's)."""
        if len(secret) >= _SHORTEST_SECRET:
            self._secrets.add(secret)

    def redact(self, text: str) -> str:
        for secret in sorted(self._secrets, key=len, reverse=True):  # a token before its own secret part
            text = text.replace(secret, REDACTED)
        for shape, replacement in _SHAPES:
            text = shape.sub(replacement, text)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            self._redact_record(record)
        except Exception:  # never let an unchecked record through, nor a logging call raise (e.g. at exit)
            record.msg, record.args = "[a log record could not be checked for secrets: left out]", ()
            record.exc_info = record.exc_text = record.stack_info = None
        return True

    def _redact_record(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # a bad format string: logging would print the raw arguments, so drop them
            message = f"{record.msg} [the arguments did not fit the message]"
        record.msg, record.args = self.redact(message), ()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        for name in EXTRA_FIELDS:
            value = record.__dict__.get(name)
            if isinstance(value, str):
                setattr(record, name, self.redact(value))


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time (ISO 8601, UTC), level, logger, message; `case`, `step`, `outcome` and
    `update` when the call passed them with `extra=`; the exception (with its traceback) as the string `exc`, and
    a stack as `stack`. Put it behind a SecretFilter, which has redacted the message and `exc` by then."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in EXTRA_FIELDS:
            if name in record.__dict__:
                line[name] = record.__dict__[name]
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line["exc"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, default=str)


def secrets_of(settings: Settings) -> list[str]:
    """Every secret setting's value (each SecretStr field, so a new one is covered too), and the bot token's secret
    part on its own (the part before ':' is public)."""
    values = [value.get_secret_value() for name in type(settings).model_fields
              if isinstance(value := getattr(settings, name), SecretStr) and value.get_secret_value()]
    token = settings.telegram_bot_token.get_secret_value() if settings.telegram_bot_token else ""
    return values + ([token.split(":", 1)[1]] if ":" in token else [])


def configure_logging(settings: Settings) -> SecretFilter:
    """For the `recovery-bot` commands: a stderr handler at LOG_LEVEL (text, or JSON lines with LOG_FORMAT=json),
    chatty loggers held back, the filter on. Like `logging.basicConfig`, it adds no handler when root has one."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if settings.log_format == "json" else logging.Formatter(LOG_FORMAT))
    logging.basicConfig(level=settings.log_level, handlers=[handler])
    if settings.log_level != "DEBUG":
        logging.getLogger("alembic").setLevel(logging.WARNING)  # a line per migration step: noise, not secrets
    _hold_back_chatty_loggers()
    return _guard_root_handlers(secrets_of(settings))


def guard_host_logging(settings: Settings) -> SecretFilter:
    """For a desk mounted in the host's bot: make the host's logging safe for the desk's secrets, politely.

    It adds no handler and leaves the root logger's level alone: the host decides where logs go and how they
    look. It does three things, because without them the host's own framework would write our codes: our loggers
    (`bot`, `flows`, `recovery_bot`) get LOG_LEVEL; the chatty loggers are raised to their safe level (never
    lowered: a host that keeps them quieter stays quieter); and the filter is added to the root logger's existing
    handlers. A filter only replaces secrets, so the host's records look the same otherwise. Handlers on other
    loggers, or added later, are the host's to guard: the filter is returned (also as `MountedDesk.log_filter`)
    for `handler.addFilter`.
    """
    for name in OUR_LOGGERS:
        logging.getLogger(name).setLevel(settings.log_level)
    _hold_back_chatty_loggers()
    return _guard_root_handlers(secrets_of(settings))


def hide(secret: str) -> None:
    """Redact `secret` in every root handler that `configure_logging` or `guard_host_logging` guarded."""
    for handler in logging.getLogger().handlers:
        for guard in handler.filters:
            if isinstance(guard, SecretFilter):
                guard.hide(secret)


def _hold_back_chatty_loggers() -> None:
    """Raise each chatty logger to its safe level where it would log below it; never lower one."""
    for name, safe_level in CHATTY_LOGGERS.items():
        logger = logging.getLogger(name)
        if logger.getEffectiveLevel() < safe_level:
            logger.setLevel(safe_level)


def _guard_root_handlers(secrets: list[str]) -> SecretFilter:
    """Put one SecretFilter on every root handler (the one already there, if a call before put it) and return it."""
    handlers = logging.getLogger().handlers
    guards = [f for handler in handlers for f in handler.filters if isinstance(f, SecretFilter)]
    guard = guards[0] if guards else SecretFilter()
    for secret in secrets:
        guard.hide(secret)
    for handler in handlers:
        if not any(isinstance(f, SecretFilter) for f in handler.filters):
            handler.addFilter(guard)
    return guard
