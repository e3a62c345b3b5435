"""Mounting the desk in a bot you already run, on python-telegram-bot or aiogram: everything a host needs is
importable from here (each framework's pieces load only when first used, so a host on one framework never
imports the other).

    from bot.library import load_settings, start_desk, PtbTransport, ptb_handlers    # or AiogramTransport, …

    desk = await start_desk(load_settings(), PtbTransport(application.bot))
    application.add_handlers(ptb_handlers(desk))            # python-telegram-bot

    desk = await start_desk(load_settings(), AiogramTransport(bot))
    dispatcher.include_router(aiogram_router(desk))         # aiogram

Your framework's own poller then delivers updates; it confirms them before they are handled, so a crash can
lose the few in flight. `recovery-bot run` uses a poller that confirms only what is committed.

`start_desk` also makes your logging safe for the desk's secrets without taking it over: see
`bot.logs.guard_host_logging` for what it changes (it adds no handler).
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from bot.app import App, open_app
from bot.config import Settings, load_settings
from bot.frontends.desk import TelegramDesk
from bot.logs import SecretFilter, guard_host_logging
from flows.delivery import Transport
from flows.runner import Runner


class MountedDesk(TelegramDesk):
    """A desk started by `start_desk`; `close()` finishes the events in hand and closes the database.

    `log_filter` redacts the desk's secrets: add it to any log handler of yours that is not on the root logger.
    """

    def __init__(self, app: App, runner: Runner, log_filter: SecretFilter) -> None:
        super().__init__(runner, app.store, app.limiter)
        self.app = app
        self.log_filter = log_filter

    async def close(self) -> None:
        await self.app.close()


async def start_desk(settings: Settings, transport: Transport) -> MountedDesk:
    """Guard the logs, migrate the database, start the runner and its timers; returns the desk for
    `ptb_handlers`/`aiogram_router`. A database that cannot be used raises `flows.store.startup.DatabaseProblem`,
    whose message is one line for the operator."""
    if settings.secret_key is None:
        raise ValueError("SECRET_KEY must be set (at least 32 characters)")
    if problem := settings.code_delivery_problem():
        raise ValueError(problem)
    log_filter = guard_host_logging(settings)
    app = await open_app(settings, settings.secret_key.get_secret_value())
    return MountedDesk(app, await app.start(transport), log_filter)


_FRAMEWORK_PIECES = {
    "PtbTransport": "bot.frontends.ptb", "ptb_handlers": "bot.frontends.ptb",
    "AiogramTransport": "bot.frontends.aiogram", "aiogram_router": "bot.frontends.aiogram",
}
__all__ = ["MountedDesk", "SecretFilter", "Settings", "load_settings", "start_desk", *_FRAMEWORK_PIECES]


def __getattr__(name: str) -> Any:
    """The framework pieces, imported on first use."""
    if name in _FRAMEWORK_PIECES:
        return getattr(import_module(_FRAMEWORK_PIECES[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
