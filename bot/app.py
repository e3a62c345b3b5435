"""The composition root: settings in, a ready engine, database and runner out."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine

from bot.config import Settings
from flows.clock import Clock, SystemClock
from flows.delivery import Transport
from flows.desk import build_engine
from flows.engine import Engine
from flows.runner import Runner
from flows.services import FlowSettings, ServiceFactory
from flows.store.database import open_database, sqlite_file
from flows.store.migrate import upgrade


@dataclass
class App:
    settings: Settings
    secret_key: str
    db: AsyncEngine
    engine: Engine
    services: ServiceFactory
    clock: Clock

    def runner(self, transport: Transport) -> Runner:
        return Runner(self.db, self.engine, transport, self.clock, self.services)

    async def close(self) -> None:
        await self.db.dispose()


def flow_settings(settings: Settings, secret_key: str) -> FlowSettings:
    return FlowSettings(
        service_name=settings.service_name,
        secret_key=secret_key,
        code_ttl=timedelta(minutes=settings.code_ttl_minutes),
        withdrawal_lock=timedelta(hours=settings.withdrawal_lock_hours),
    )


async def open_app(settings: Settings, secret_key: str, clock: Clock | None = None) -> App:
    """Bring the database up to date and wire the engine to it."""
    await upgrade(settings.database_url)
    return App(
        settings=settings,
        secret_key=secret_key,
        db=open_database(settings.database_url),
        engine=build_engine(settings.service_name),
        services=ServiceFactory(flow_settings(settings, secret_key)),
        clock=clock or SystemClock(),
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
