"""The composition root: settings in, a ready engine, database and runner out."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from bot.config import Settings
from flows.announce import broadcast_effects
from flows.broadcast import BroadcastService
from flows.channels import (
    ChannelRouter,
    ChannelSender,
    ChannelTransport,
    SmsWebhookChannel,
    SmsWebhookSettings,
    SmtpChannel,
    SmtpSettings,
)
from flows.clock import Clock, SystemClock
from flows.delivery import Transport
from flows.desk import build_engine
from flows.engine import Engine
from flows.inbound import InboundLimiter
from flows.runner import Runner
from flows.services import FlowSettings, ServiceFactory
from flows.store.database import SqlStore, open_database, sqlite_file
from flows.store.migrate import upgrade


@dataclass
class App:
    settings: Settings
    secret_key: str
    store: SqlStore
    engine: Engine
    services: ServiceFactory
    clock: Clock
    channels: ChannelRouter

    def runner(self, transport: Transport) -> Runner:
        """A runner for this front end, with the broadcast sender riding along (resumed on start)."""
        broadcasts = BroadcastService(self.store, transport, self.clock, rate=self.settings.broadcast_rate)
        return Runner(self.store, self.engine, transport, self.clock, self.services,
                      channels=ChannelTransport(self.channels), effects=broadcast_effects(broadcasts),
                      companions=[broadcasts])

    def inbound_limiter(self) -> InboundLimiter:
        """The per-user shield in front of the runner (staff get a higher limit; see flows.inbound)."""
        window = timedelta(seconds=self.settings.inbound_window_seconds)
        return InboundLimiter(self.clock, self.settings.inbound_limit, window, self.settings.admin_ids)

    async def close(self) -> None:
        await self.channels.close()
        await self.store.close()


def channel_router(settings: Settings) -> ChannelRouter:
    """The SMTP and SMS senders that the settings configure (none by default)."""
    senders: dict[str, ChannelSender] = {}
    if settings.smtp_host and settings.smtp_from:
        password = settings.smtp_password.get_secret_value() if settings.smtp_password else None
        senders["smtp"] = SmtpChannel(SmtpSettings(
            host=settings.smtp_host, port=settings.smtp_port, username=settings.smtp_username,
            password=password, sender=settings.smtp_from, security=settings.smtp_security,
        ))
    if settings.sms_webhook_url:
        token = settings.sms_webhook_token.get_secret_value() if settings.sms_webhook_token else None
        senders["sms"] = SmsWebhookChannel(SmsWebhookSettings(url=settings.sms_webhook_url, token=token))
    return ChannelRouter(senders)


def flow_settings(settings: Settings, secret_key: str) -> FlowSettings:
    return FlowSettings(
        service_name=settings.service_name,
        secret_key=secret_key,
        code_ttl=timedelta(minutes=settings.code_ttl_minutes),
        withdrawal_lock=timedelta(hours=settings.withdrawal_lock_hours),
        code_channels=settings.code_channels(),
        admin_ids=settings.admin_ids,
        staff_chat_id=settings.admin_chat_id,
        document_retention=timedelta(days=settings.document_retention_days),
        case_timeout=timedelta(hours=settings.case_timeout_hours),
        review_sla=timedelta(hours=settings.review_sla_hours),
    )


async def open_app(settings: Settings, secret_key: str, clock: Clock | None = None) -> App:
    """Bring the database up to date and wire the engine to it."""
    await upgrade(settings.database_url)
    flows_settings = flow_settings(settings, secret_key)
    return App(
        settings=settings,
        secret_key=secret_key,
        store=SqlStore(open_database(settings.database_url)),
        engine=build_engine(flows_settings),
        services=ServiceFactory(flows_settings),
        clock=clock or SystemClock(),
        channels=channel_router(settings),
    )


def local_secret_key(settings: Settings) -> str:
    """SECRET_KEY, or for local use a generated one kept (mode 600) beside the SQLite database."""
    if settings.secret_key is not None:
        return settings.secret_key.get_secret_value()
    database = sqlite_file(settings.database_url)
    folder = database.parent if database is not None else Path("data")
    path = folder / "console-secret-key"
    if path.exists():
        return path.read_text().strip()
    folder.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(48)
    path.touch(mode=0o600)
    path.write_text(key)
    return key
