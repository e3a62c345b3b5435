"""The hot path stays lean: nothing per request that could be done once (issue 11)."""

from __future__ import annotations

import asyncio
import gc
import importlib._bootstrap
import re
from importlib.metadata import requires
from typing import Any

import aiogram
import pytest
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from pydantic._internal import _generics

from bot.frontends.aiogram import AiogramTransport
from flows.replies import EditMessage, SendMessage
from tests.support.botapi import BotApiServer
from tests.support.e2e import TOKEN


def count_imports_from_disk(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The modules the import system goes looking for from now on (an import already in sys.modules is not one)."""
    looked_for: list[str] = []
    find_and_load = importlib._bootstrap._find_and_load  # type: ignore[attr-defined]

    def counting(name: str, *args: Any) -> Any:
        looked_for.append(name)
        return find_and_load(name, *args)

    monkeypatch.setattr(importlib._bootstrap, "_find_and_load", counting)
    return looked_for


def test_sniffio_is_a_declared_dependency() -> None:
    declared = {re.split(r"[<>=!~;\[ ]", line, maxsplit=1)[0] for line in requires("recovery-bot") or []}
    assert "sniffio" in declared


async def test_httpcore_finds_its_async_library_without_an_import_per_request(monkeypatch: pytest.MonkeyPatch) -> None:
    from httpcore._synchronization import current_async_library

    assert current_async_library() == "asyncio"  # the first call may import sniffio
    looked_for = count_imports_from_disk(monkeypatch)
    for _ in range(100):
        assert current_async_library() == "asyncio"
    await asyncio.sleep(0)
    assert looked_for == []


def count_generic_model_builds(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the parametrised pydantic models (`Response[Message]`…) built from now on."""
    built: list[str] = []
    create = _generics.create_generic_submodel

    def counting(name: str, *args: Any, **kwargs: Any) -> Any:
        built.append(name)
        return create(name, *args, **kwargs)

    monkeypatch.setattr(_generics, "create_generic_submodel", counting)
    return built


async def test_aiogram_builds_each_response_model_once(monkeypatch: pytest.MonkeyPatch) -> None:
    async with BotApiServer(token=TOKEN) as server:
        bot = aiogram.Bot(TOKEN, session=AiohttpSession(api=TelegramAPIServer.from_base(server.url)))
        transport = AiogramTransport(bot)
        built = count_generic_model_builds(monkeypatch)
        try:
            for i in range(5):
                message_id = await transport.deliver(SendMessage(7, f"message {i}"))
                assert message_id is not None
                await transport.deliver(EditMessage(7, message_id, f"edited {i}"))
                await bot.get_me()
                gc.collect()  # what the collector does every so often under load: weakly cached models die
        finally:
            await bot.session.close()
    assert built == []
