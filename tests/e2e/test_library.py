"""Mounting the desk in an existing bot: python-telegram-bot's Application and aiogram's Dispatcher, each with
its own poller, against the local Bot API server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiogram import Bot, Dispatcher
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from telegram.ext import ApplicationBuilder

from bot.library import (
    AiogramTransport,
    PtbTransport,
    Settings,
    aiogram_router,
    load_settings,
    ptb_handlers,
    start_desk,
)
from tests.support.botapi import BotApiServer
from tests.support.desk import SECRET_KEY
from tests.support.e2e import (
    TOKEN,
    TgUser,
    end_lockouts_now,
    lock_out_with_wrong_codes,
    schedule_deletion_now,
    walk_phone_switch_to_the_codes,
)


@pytest.fixture
async def server() -> AsyncIterator[BotApiServer]:
    async with BotApiServer(token=TOKEN) as api:
        yield api


def settings_for(tmp_path: Path) -> Settings:
    return load_settings(database_url=f"sqlite+aiosqlite:///{tmp_path}/desk.db", secret_key=SECRET_KEY,
                         service_name="Acme", code_delivery="chat")


async def test_ptb_application_with_the_desk_handlers(server: BotApiServer, tmp_path: Path) -> None:
    application = (ApplicationBuilder().token(TOKEN).base_url(f"{server.url}/bot")
                   .base_file_url(f"{server.url}/file/bot").build())
    async with application:
        desk = await start_desk(settings_for(tmp_path), PtbTransport(application.bot))
        application.add_handlers(ptb_handlers(desk))
        await application.start()
        assert application.updater is not None
        await application.updater.start_polling(poll_interval=0.0, timeout=1)
        try:
            user = TgUser(server, 201)
            user.send("/start")
            await user.expect("Welcome to the official Acme account recovery desk.")
            user.tap("Reset with my backup key")
            await user.expect("Which email address")
        finally:
            await application.updater.stop()
            await application.stop()
            await desk.close()


async def test_aiogram_dispatcher_with_the_desk_router(server: BotApiServer, tmp_path: Path) -> None:
    bot = Bot(TOKEN, session=AiohttpSession(api=TelegramAPIServer.from_base(server.url)))
    desk = await start_desk(settings_for(tmp_path), AiogramTransport(bot))
    dispatcher = Dispatcher()
    dispatcher.include_router(aiogram_router(desk))
    polling = asyncio.create_task(dispatcher.start_polling(bot, handle_signals=False, polling_timeout=1))
    try:
        user = TgUser(server, 202)
        user.send("/start")
        await user.expect("Welcome to the official Acme account recovery desk.")
        user.tap("Switch to phone verification")
        await user.expect("Which email address")
    finally:
        await dispatcher.stop_polling()
        await polling
        await desk.close()
        await bot.session.close()


async def test_a_mounted_desk_fires_its_timers(server: BotApiServer, tmp_path: Path) -> None:
    application = (ApplicationBuilder().token(TOKEN).base_url(f"{server.url}/bot")
                   .base_file_url(f"{server.url}/file/bot").build())
    async with application:
        desk = await start_desk(settings_for(tmp_path), PtbTransport(application.bot))
        try:
            await schedule_deletion_now(desk.app.store, 203, 7)
            call = await server.wait_for(lambda c: c.method == "deleteMessage", timeout=10)
            assert str(call.params["chat_id"]) == "203" and str(call.params["message_id"]) == "7"
        finally:
            await desk.close()


async def test_a_mounted_desk_ends_a_lockout(server: BotApiServer, tmp_path: Path) -> None:
    application = (ApplicationBuilder().token(TOKEN).base_url(f"{server.url}/bot")
                   .base_file_url(f"{server.url}/file/bot").build())
    async with application:
        settings = settings_for(tmp_path)
        desk = await start_desk(settings, PtbTransport(application.bot))
        application.add_handlers(ptb_handlers(desk))
        await application.start()
        assert application.updater is not None
        await application.updater.start_polling(poll_interval=0.0, timeout=1)
        try:
            user = TgUser(server, 204)
            await walk_phone_switch_to_the_codes(user, "nobody@example.com")
            await lock_out_with_wrong_codes(user)
            assert await end_lockouts_now(settings.database_url) == 1
            await user.expect("The pause is over: you can ask for a new code now.")
        finally:
            await application.updater.stop()
            await application.stop()
            await desk.close()


def test_the_mounted_desk_api_comes_from_one_module_without_loading_the_other_framework() -> None:
    import subprocess
    import sys

    probe = ("import sys, bot.library as desk; desk.PtbTransport, desk.ptb_handlers, desk.start_desk; "
             "print('aiogram' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
