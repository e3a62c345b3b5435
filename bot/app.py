"""The composition root: the one place the desk is assembled and started, whatever the entry point."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path

from bot.config import Settings, StartupError
from flows.announce import broadcast_effects
from flows.broadcast import BroadcastService
from flows.change_worker import ChangeWorker
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
from flows.events_out import EventSender
from flows.http_directory import DirectoryClient
from flows.inbound import InboundLimiter
from flows.ports import Store
from flows.retention import Pruner
from flows.runner import Companion, Runner
from flows.services import FlowSettings, ServiceFactory, warm_up
from flows.store.database import SqlStore, open_database, sqlite_file
from flows.store.startup import make_ready

Sleep = Callable[[float], Awaitable[None]]


class App:
    """The desk, assembled once for every entry point — `run`, `console`, a mounted desk, the tests.

    `start(transport)` starts the runner for one front end, and with it delivery, the timers, the pruner and the
    broadcast sender (resumed where a restart left it); `stop()` finishes the events in hand and stops them all;
    `close()` also releases the store and the mail/SMS connections.
    """

    def __init__(
        self,
        store: Store,
        engine: Engine,
        services: ServiceFactory | None,
        clock: Clock,
        channels: Transport | None = None,
        broadcast_rate: float = 25.0,
        broadcast_sleep: Sleep | None = None,
        limiter: InboundLimiter | None = None,
        on_close: Callable[[], Awaitable[None]] | None = None,
        events: tuple[str, str] | None = None,
    ) -> None:
        """`events` is EVENTS_URL and its signing key, when events go out."""
        self.store = store
        self.engine = engine
        self.services = services
        self.clock = clock
        self.channels = channels
        self.broadcast_rate = broadcast_rate
        self.broadcast_sleep = broadcast_sleep
        self.limiter = limiter or InboundLimiter(clock)
        self._on_close = on_close
        self.events = events
        self._runner: Runner | None = None
        self._broadcasts: BroadcastService | None = None
        self.change_worker: ChangeWorker | None = None
        self.event_sender: EventSender | None = None

    @property
    def runner(self) -> Runner:
        """The running runner; RuntimeError before `start()`."""
        if self._runner is None:
            raise RuntimeError("the desk is not started")
        return self._runner

    @property
    def broadcasts(self) -> BroadcastService:
        """The broadcast sender of the running desk; RuntimeError before `start()`."""
        if self._broadcasts is None:
            raise RuntimeError("the desk is not started")
        return self._broadcasts

    async def start(self, transport: Transport, fire_timers: bool = True) -> Runner:
        """Deliver what an earlier run left, accept events, resume broadcasts and (unless a test drives them by
        hand) fire timers as they fall due and prune old rows (flows/retention.py)."""
        if self._runner is not None:
            raise RuntimeError("the desk is already started: stop() it first")
        await warm_up(self.services)  # catalogs, countries, the decoy hash: nothing of that on the first events
        broadcasts = BroadcastService(self.store, transport, self.clock, rate=self.broadcast_rate,
                                      sleep=self.broadcast_sleep or asyncio.sleep)
        # The pruner runs beside the timers: where this process does the background work.
        companions: list[Companion] = [broadcasts, Pruner(self.store, self.clock)] if fire_timers else [broadcasts]
        worker = self.change_worker = self._change_worker()
        sender = self.event_sender = EventSender(self.store, *self.events, self.clock) if self.events else None
        if fire_timers:  # else a test sends the changes and events by hand, as it fires timers
            companions.extend(job for job in (worker, sender) if job is not None)
        runner = Runner(self.store, self.engine, transport, self.clock, self.services, channels=self.channels,
                        effects=broadcast_effects(broadcasts), companions=companions,
                        emit_events=self.events is not None,
                        staff=self.services.settings.admin_ids if self.services is not None else ())
        if worker is not None:  # what it learns from the service reaches the user through timers
            worker.on_timers = runner.timers_changed
        broadcasts.dispatch = runner.dispatcher.push  # its reports go through the outbox like every reply
        try:
            await runner.start()
        except BaseException:  # whatever started (writer, delivery) stops with it
            await runner.stop()
            raise
        if fire_timers:
            runner.start_timers()
        self._runner, self._broadcasts = runner, broadcasts
        return runner

    def _change_worker(self) -> ChangeWorker | None:
        """With an HTTP directory, the worker that sends the changes decisions queue for it."""
        if self.services is None or self.services.directory is None:
            return None
        return ChangeWorker(self.store, self.services.directory, self.services.box, self.clock,
                            emit_events=self.events is not None)

    async def stop(self) -> None:
        """Stop the timers, finish the events in hand, then stop delivery and broadcasts."""
        if self._runner is not None:
            await self._runner.stop()
            self._runner = self._broadcasts = None

    async def close(self) -> None:
        await self.stop()
        if self._on_close is not None:
            await self._on_close()
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


def directory_client(settings: Settings) -> DirectoryClient | None:
    """The client of the service's own account system, when ACCOUNT_DIRECTORY_URL is set (else the built-in
    accounts table is the directory)."""
    if not settings.account_directory_url:
        return None
    token, key = settings.account_directory_token, settings.account_directory_signing_key
    return DirectoryClient(settings.account_directory_url, token=token.get_secret_value() if token else None,
                           signing_key=key.get_secret_value() if key else None,
                           timeout=settings.account_directory_timeout_seconds,
                           cooldown=min(10.0, 2 * settings.account_directory_timeout_seconds))


async def open_app(settings: Settings, secret_key: str, clock: Clock | None = None) -> App:
    """Bring the database up to date and assemble the desk the settings describe."""
    await make_ready(settings.database_url)
    flows_settings = flow_settings(settings, secret_key)
    clock = clock or SystemClock()
    router = channel_router(settings)
    window = timedelta(seconds=settings.inbound_window_seconds)
    directory = directory_client(settings)
    key = settings.events_signing_key
    events = (settings.events_url, key.get_secret_value()) if settings.events_url and key else None

    async def close_connections() -> None:
        await router.close()
        if directory is not None:
            await directory.close()

    return App(
        store=SqlStore(open_database(settings.database_url)),
        engine=build_engine(flows_settings),
        services=ServiceFactory(flows_settings, directory, emit_events=events is not None),
        clock=clock,
        channels=ChannelTransport(router),
        broadcast_rate=settings.broadcast_rate,
        limiter=InboundLimiter(clock, settings.inbound_limit, window, flows_settings.is_admin),
        on_close=close_connections,
        events=events,
    )


def local_secret_key(settings: Settings) -> str:
    """SECRET_KEY, or for local use a generated one kept (mode 600) beside the SQLite database."""
    if settings.secret_key is not None:
        return settings.secret_key.get_secret_value()
    database = sqlite_file(settings.database_url)
    folder = database.parent if database is not None else Path("data")
    path = folder / "console-secret-key"
    try:
        if path.exists():
            return path.read_text().strip()
        folder.mkdir(parents=True, exist_ok=True)
        key = secrets.token_urlsafe(48)
        path.touch(mode=0o600)
        path.write_text(key)
    except OSError as error:
        raise StartupError(f"cannot keep a local SECRET_KEY in {path} ({error.strerror}: {error.filename}); set "
                           "SECRET_KEY, or DATABASE_URL to a file in a folder this user can write") from None
    return key
