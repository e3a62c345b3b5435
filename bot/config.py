"""Settings, loaded once from the environment and `.env`; every one is listed in `.env.example`."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from flows.keys import MIN_SECRET_LENGTH


class Settings(BaseSettings):
    """The operator's configuration."""

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", env_ignore_empty=True, extra="ignore"
    )

    telegram_bot_token: SecretStr | None = None
    telegram_api_url: str = "https://api.telegram.org"
    database_url: str = "sqlite+aiosqlite:///./data/recovery.db"
    admin_ids: Annotated[tuple[int, ...], NoDecode] = ()
    admin_chat_id: int | None = None
    document_retention_days: int = Field(default=30, ge=1, le=3650)
    broadcast_rate: float = Field(default=25.0, gt=0, le=1000)
    bot_framework: Literal["ptb", "aiogram"] = "ptb"
    service_name: str = Field(default="Example Exchange", min_length=1, max_length=64)
    code_ttl_minutes: int = Field(default=30, ge=1, le=24 * 60)
    withdrawal_lock_hours: int = Field(default=48, ge=1, le=24 * 30)
    case_timeout_hours: int = Field(default=24, ge=2, le=24 * 30)
    review_sla_hours: int = Field(default=24, ge=1, le=24 * 30)
    inbound_limit: int = Field(default=20, ge=1, le=10_000)
    inbound_window_seconds: float = Field(default=10.0, gt=0, le=3600)
    secret_key: SecretStr | None = None
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["text", "json"] = "text"
    smtp_host: str | None = None
    smtp_port: int = Field(default=587, ge=1, le=65535)
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_from: str | None = None
    smtp_security: Literal["starttls", "ssl", "none"] = "starttls"
    sms_webhook_url: str | None = None
    sms_webhook_token: SecretStr | None = None
    code_delivery: Literal["chat"] | None = None
    account_directory_url: str | None = None
    account_directory_token: SecretStr | None = None
    account_directory_signing_key: SecretStr | None = None
    account_directory_timeout_seconds: float = Field(default=5.0, gt=0, le=60)
    events_url: str | None = None
    events_signing_key: SecretStr | None = None
    http_port: int | None = Field(default=None, ge=1, le=65535)
    http_host: str = "127.0.0.1"

    @model_validator(mode="after")
    def _smtp_needs_a_sender(self) -> Settings:
        if self.smtp_host and not self.smtp_from:
            raise ValueError("SMTP_FROM is required when SMTP_HOST is set (the From address of code emails)")
        return self

    @model_validator(mode="after")
    def _directory_needs_credentials(self) -> Settings:
        if self.account_directory_url and not (self.account_directory_token or self.account_directory_signing_key):
            raise ValueError("ACCOUNT_DIRECTORY_URL needs ACCOUNT_DIRECTORY_TOKEN or ACCOUNT_DIRECTORY_SIGNING_KEY "
                             "(how the desk proves itself to your account service)")
        return self

    @model_validator(mode="after")
    def _events_need_a_key(self) -> Settings:
        key = self.events_signing_key.get_secret_value() if self.events_signing_key else ""
        if self.events_url and len(key) < MIN_SECRET_LENGTH:
            raise ValueError(f"EVENTS_URL needs EVENTS_SIGNING_KEY of at least {MIN_SECRET_LENGTH} characters "
                             "(receivers check each event's signature with it; try: openssl rand -hex 32)")
        return self

    @field_validator("sms_webhook_url", "account_directory_url", "events_url")
    @classmethod
    def _check_webhook(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value

    def code_channels(self) -> dict[str, str]:
        """Where codes go per factor: SMS/SMTP when configured, else shown in the chat."""
        return {"phone": "sms" if self.sms_webhook_url else "chat", "email": "smtp" if self.smtp_host else "chat"}

    def code_delivery_problem(self) -> str | None:
        """Why a production desk must not start yet: a factor whose codes would be shown in the chat, unless
        CODE_DELIVERY=chat allows that (demos and tests). None when nothing is missing."""
        wanted = {"phone": "SMS_WEBHOOK_URL", "email": "SMTP_HOST"}
        missing = [wanted[factor] for factor, channel in self.code_channels().items() if channel == "chat"]
        if not missing:
            return None
        if self.code_delivery == "chat" and len(missing) == 1:  # the other factor alone would then pass Method 1
            have = next(name for name in wanted.values() if name not in missing)
            return (f"CODE_DELIVERY=chat with only {have} set would show the other codes in the chat, so one factor "
                    f"alone could change another; set {missing[0]} too, or neither for a demo")
        if self.code_delivery == "chat":
            return None
        return (f"{' and '.join(missing)} not set: verification codes would be shown in the chat, which proves "
                "nothing about the phone or mailbox on file; set it, or CODE_DELIVERY=chat for a demo")

    @field_validator("admin_ids", mode="before")
    @classmethod
    def _split_ids(cls, value: object) -> object:
        if isinstance(value, str):
            parts = [part.strip() for part in value.split(",") if part.strip()]
            if not all(part.lstrip("-").isdigit() for part in parts):
                raise ValueError("must be comma-separated numeric Telegram user ids, e.g. 12345,67890")
            return tuple(int(part) for part in parts)
        return value

    @field_validator("telegram_api_url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: str) -> str:
        from flows.store.startup import url_problem  # SQLAlchemy and Alembic only once settings are read

        if problem := url_problem(value):
            raise ValueError(problem)
        return value

    @field_validator("secret_key")
    @classmethod
    def _check_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < MIN_SECRET_LENGTH:
            raise ValueError(f"must be at least {MIN_SECRET_LENGTH} characters (try: openssl rand -hex 32)")
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("log_format", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value


class StartupError(Exception):
    """The desk cannot start; the message is one line for the operator that names the cause and the fix."""


class SettingsError(StartupError):
    """A setting has a bad value; the message is one line meant for the operator, and `problems` has one line per
    bad setting (for `recovery-bot doctor`)."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def load_settings(**overrides: object) -> Settings:
    """Read the settings, turning validation errors into one clear line per bad setting."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as error:
        lines = []
        for problem in error.errors():
            message = problem["msg"].removeprefix("Value error, ")
            lines.append(f"{str(problem['loc'][0]).upper()}: {message}" if problem["loc"] else message)
        raise SettingsError(lines) from None
