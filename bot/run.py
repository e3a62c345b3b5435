"""`recovery-bot run`: the desk on Telegram, by long polling (default) or a webhook."""

from __future__ import annotations

import asyncio
import gc
import logging
import random
import signal
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlparse

from aiohttp import web

from bot.app import App, open_app
from bot.config import Settings, StartupError
from bot.frontends.desk import TelegramDesk
from bot.frontends.monitoring import Monitor, UpdateFeed, monitoring_app
from bot.frontends.polling import Poller
from bot.frontends.telegram import BadToken, Refusal, Unreachable
from bot.frontends.webhook import serve, webhook_app
from bot.logs import SecretFilter, hide, secrets_of
from flows.delivery import Transport
from flows.keys import derive_key
from flows.texts import DEFAULT_LANGUAGE, languages, plain_text, translate

log = logging.getLogger("recovery_bot")

EXIT_CONFIG = 2
TOKEN_CHECK_TRIES = 3
FIRST_RETRY_DELAY = 1.0  # seconds; doubled before each further try
MAX_START_UP_DELAY = 30.0
USER_COMMANDS = ("start", "status", "cancel", "help", "language", "privacy", "mydata", "delete")
DESCRIPTION_LIMIT, SHORT_DESCRIPTION_LIMIT = 512, 120
ADMIN_COMMANDS = ("queue", "case", "reject", "stats", "audit", "broadcast", "broadcast_cancel")


class Front(Protocol):
    name: str

    @property
    def transport(self) -> Transport: ...

    async def check_token(self) -> str: ...
    def attach(self, desk: TelegramDesk) -> None: ...
    async def set_commands(self, commands: list[tuple[str, str]], language: str | None = None) -> None: ...
    async def set_admin_commands(self, admin_ids: tuple[int, ...], commands: list[tuple[str, str]],
                                 language: str | None = None) -> None: ...
    async def set_description(self, description: str, short_description: str,
                              language: str | None = None) -> None: ...
    async def fetch(self, offset: int | None, wait_seconds: int) -> Any: ...
    async def process(self, update: Any) -> None: ...
    def parse(self, data: dict[str, Any]) -> Any: ...
    async def set_webhook(self, url: str, secret: str) -> None: ...
    async def delete_webhook(self) -> None: ...
    def refusal(self, error: Exception) -> Refusal | None: ...
    async def close(self) -> None: ...


@dataclass(frozen=True)
class Webhook:
    url: str
    host: str
    port: int


def make_front(settings: Settings) -> Front:
    token = settings.telegram_bot_token.get_secret_value() if settings.telegram_bot_token else ""
    if settings.bot_framework == "aiogram":
        from bot.frontends.aiogram import AiogramFront

        return AiogramFront(token, settings.telegram_api_url)
    from bot.frontends.ptb import PtbFront

    return PtbFront(token, settings.telegram_api_url)


def refuse(message: str) -> int:
    print(f"recovery-bot: {message}", file=sys.stderr)
    return EXIT_CONFIG


async def run_telegram(settings: Settings, webhook: Webhook | None) -> int:
    """Serve the desk on Telegram until SIGTERM or SIGINT; returns the exit code."""
    if settings.telegram_bot_token is None:
        return refuse("TELEGRAM_BOT_TOKEN is not set (get one from @BotFather)")
    if settings.secret_key is None:
        return refuse("SECRET_KEY is not set: it must be at least 32 characters (try: openssl rand -hex 32)")
    if problem := settings.code_delivery_problem():
        return refuse(problem)
    front = make_front(settings)
    try:
        username = await check_token_patiently(front)
    except BadToken as error:
        await front.close()
        return refuse(f"Telegram refused TELEGRAM_BOT_TOKEN ({error}); check it with @BotFather")
    except Unreachable as error:
        await front.close()
        redact = SecretFilter(secrets_of(settings)).redact  # the reason may quote the request's URL, token and all
        return refuse(redact(f"cannot reach the Telegram Bot API at {settings.telegram_api_url}: {error}; check the "
                             "network (a firewall or proxy?) and TELEGRAM_API_URL"))
    app = await open_app(settings, settings.secret_key.get_secret_value())
    try:
        await _serve(app, settings, front, username, webhook)
    finally:
        await front.close()
        await app.close()
    return 0


async def check_token_patiently(front: Front, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> str:
    """`front.check_token()`, tried again after a short wait while the Bot API is unreachable (a network that
    comes up with the bot, say), a few times in all; logs a line per failed try that is tried again."""
    delay = FIRST_RETRY_DELAY
    for attempt in range(1, TOKEN_CHECK_TRIES):
        try:
            return await front.check_token()
        except Unreachable as error:
            log.warning("cannot reach the Telegram Bot API (try %d of %d): %s; trying again in %g s",
                        attempt, TOKEN_CHECK_TRIES, error, delay)
        await sleep(delay)
        delay *= 2
    return await front.check_token()


async def patiently(what: str, call: Callable[[], Awaitable[None]], refusal: Callable[[Exception], Refusal | None],
                    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                    rng: Callable[[], float] = random.random) -> None:
    """A start-up call to the Bot API, tried again for as long as Telegram fails it (a 5xx, a timeout, a dropped
    connection): after a doubling delay with jitter, or after the wait a 429 asks for. Any other refusal is
    raised. The token check before it proved the API reachable and the token good; a passing fault must not end
    the process. One log line per failed try."""
    delay = FIRST_RETRY_DELAY
    while True:
        try:
            return await call()
        except Exception as error:
            refused = refusal(error)
            if refused is not None and refused.kind != "retry_after":
                raise
            wait = refused.retry_after if refused is not None else delay * (0.8 + 0.4 * rng())
            log.warning("%s failed (%s: %s); retrying in %.1f s", what, type(error).__name__, error, wait)
        await sleep(wait)
        delay = min(MAX_START_UP_DELAY, delay * 2)


async def _serve(app: App, settings: Settings, front: Front, username: str, webhook: Webhook | None) -> None:
    runner = await app.start(front.transport)
    desk = TelegramDesk(runner, app.store, app.limiter)
    front.attach(desk)
    monitor = Monitor(runner, UpdateFeed("webhook" if webhook else "polling"))
    monitoring = await _serve_monitoring(settings, monitor, webhook)
    for language in menu_languages():
        await set_menus(front, settings, language)
    warn_about_chat_channels(settings)
    await warn_about_silent_admins(app, settings.admin_ids)
    freeze_start_up_objects()
    stopping = _stop_on_signals()
    log.info("@%s is serving on %s (%s)", username, front.name, "webhook" if webhook else "long polling")
    try:
        if webhook is None:
            await patiently("deleting the webhook", front.delete_webhook, front.refusal)
            await Poller(front.fetch, front.process, desk, feed=monitor.feed).run(stopping)
        else:
            await _serve_webhook(settings, front, desk, webhook, stopping, monitor)
    finally:
        log.info("stopping: finishing the events in hand")
        stopping.set()
        if monitoring is not None:
            await monitoring.cleanup()
        await app.stop()


def _separate_monitoring(settings: Settings, webhook: Webhook | None) -> bool:
    """Whether /metrics and /healthz get a server of their own: when HTTP_PORT is set, and is not the webhook's."""
    return settings.http_port is not None and (webhook is None or settings.http_port != webhook.port)


async def _serve_monitoring(settings: Settings, monitor: Monitor, webhook: Webhook | None) -> web.AppRunner | None:
    """The HTTP_PORT server of /metrics and /healthz, if it has one."""
    if not _separate_monitoring(settings, webhook):
        return None
    assert settings.http_port is not None
    try:
        server = await serve(monitoring_app(monitor), settings.http_host, settings.http_port)
    except OSError as error:
        raise StartupError(f"cannot serve /metrics on HTTP_HOST {settings.http_host} and HTTP_PORT "
                           f"{settings.http_port} ({error.strerror or error}); choose a free port") from None
    log.info("serving /metrics and /healthz on http://%s:%d", settings.http_host, settings.http_port)
    return server


async def _serve_webhook(settings: Settings, front: Front, desk: TelegramDesk, webhook: Webhook,
                         stopping: asyncio.Event, monitor: Monitor) -> None:
    assert settings.secret_key is not None
    secret = derive_key(settings.secret_key.get_secret_value(), "telegram-webhook", 24).hex()
    hide(secret)
    path = urlparse(webhook.url).path or "/"
    application = webhook_app(path, secret, front.parse, front.process, desk, monitor=monitor,
                              with_metrics=not _separate_monitoring(settings, webhook))
    server = await serve(application, webhook.host, webhook.port)
    try:
        await patiently("setting the webhook", lambda: front.set_webhook(webhook.url, secret), front.refusal)
        await stopping.wait()
    finally:
        await server.cleanup()


def menu_languages() -> list[str | None]:
    """The menus and descriptions to set: the default (English, for every app language without its own), then
    one per other catalog, for apps in that language."""
    return [None, *sorted(code for code in languages() if code != DEFAULT_LANGUAGE)]



async def set_menus(front: Front, settings: Settings, language: str | None) -> None:
    """The command menus (users', staff's) and the bot's description, in one language (None: the default)."""
    where = f" ({language})" if language else ""
    users = [(name, translate(f"commands.{name}", language)) for name in USER_COMMANDS]
    await patiently(f"setting the command menu{where}", lambda: front.set_commands(users, language), front.refusal)
    staff = [(name, translate(f"commands.{name}", language)) for name in USER_COMMANDS + ADMIN_COMMANDS]
    await patiently(f"setting the staff's command menus{where}",
                    lambda: front.set_admin_commands(settings.admin_ids, staff, language), front.refusal)
    description, short = bot_description(settings.service_name, language)
    try:
        await patiently(f"setting the bot's description{where}",
                        lambda: front.set_description(description, short, language), front.refusal)
    except Exception as error:  # what a chat shows before /start: a refusal must not keep the desk from serving
        log.warning("Telegram refused the bot's description%s (%s); serving without it", where, error)


def bot_description(service: str, language: str | None = None) -> tuple[str, str]:
    """What Telegram shows in an empty chat with the bot, and on its profile: who it is, and what it never asks
    for (plain text, within Telegram's 512 and 120 characters)."""
    description = plain_text(translate("bot.description", language, service=service))
    short = plain_text(translate("bot.short_description", language, service=service))
    return _within(description, DESCRIPTION_LIMIT), _within(short, SHORT_DESCRIPTION_LIMIT)


def _within(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def freeze_start_up_objects() -> None:
    """Once start-up is over, move what it made (modules, catalogs, pydantic models, the assembled app) out of the
    collector's generations: those objects live as long as the process, and each full collection no longer walks
    them (under load, the longest full collection fell from about 290 to 6–22 ms of CPU on aiogram and from about
    125 to 5–16 ms on python-telegram-bot: benchmarks/gc_pauses.py). Garbage is collected first, so none is kept
    for good. The collector's thresholds stay as they are: young collections take at most about 12 ms each and
    some 2–3 % of the time under load, so there is little for a larger first generation to win."""
    gc.collect()
    gc.freeze()


def _stop_on_signals() -> asyncio.Event:
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    return stopping


async def warn_about_silent_admins(app: App, admin_ids: tuple[int, ...]) -> None:
    """Telegram lets a bot write only to people who wrote to it first: name the admins it cannot reach yet."""
    async with app.store.reading() as tx:
        known = await tx.users.known(admin_ids)
    silent = [admin for admin in admin_ids if admin not in known]
    if silent:
        log.warning("admins %s have not opened the bot yet: it cannot write to them until they send it /start; "
                    "their review cards wait in /queue", ", ".join(map(str, silent)))
    if not admin_ids:
        log.warning("ADMIN_IDS is empty: nobody can review Method 2 requests")


def warn_about_chat_channels(settings: Settings) -> None:
    """A code shown in the chat proves presence in the chat, not possession of the phone or mailbox."""
    for factor, channel in settings.code_channels().items():
        if channel == "chat":
            setting = "SMS_WEBHOOK_URL" if factor == "phone" else "SMTP_HOST"
            log.warning("%s codes are shown in the chat because %s is not set: that proves only that the person "
                        "is in the chat, not that they hold the %s on file", factor, setting, factor)
