"""The hot path stays lean: nothing per request that could be done once (issue 11)."""

from __future__ import annotations

import asyncio
import builtins
import gc
import gettext
import importlib._bootstrap
import io
import os
import re
import threading
from collections.abc import Callable
from importlib.metadata import requires
from typing import Any, cast

import aiogram
import pytest
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from pydantic._internal import _generics
from sqlalchemy.ext.asyncio import AsyncEngine

from bot import app, run
from bot.config import Settings
from bot.frontends.aiogram import AiogramTransport
from flows import countries, directory
from flows.clock import FakeClock
from flows.directory import SecretBox, hash_answer
from flows.methods import enrol
from flows.replies import EditMessage, SendMessage, SendPhoto
from flows.services import FlowSettings, ServiceFactory, warm_up
from flows.store import tables
from flows.store.accounts import SqlAccounts
from flows.store.memory import MemoryStore
from flows.table_directory import TableDirectory
from flows.texts import Text, template, text, translate
from tests.engine_flow import make_engine
from tests.support.botapi import BotApiServer
from tests.support.chat import Bot, RecordingTransport
from tests.support.e2e import TOKEN
from tests.test_review import submitted_case


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


def count_calls(monkeypatch: pytest.MonkeyPatch, targets: list[tuple[object, str]]) -> list[str]:
    """Every call, from now on, of the functions named in `targets` ((module, name) pairs)."""
    calls: list[str] = []

    def counting(name: str, real: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            calls.append(f"{name}({args[0] if args else ''})")
            return real(*args, **kwargs)
        return wrapper

    for module, name in targets:
        monkeypatch.setattr(module, name, counting(name, getattr(module, name)))
    return calls


async def test_after_warm_up_texts_countries_and_the_decoy_hash_need_no_disk_and_no_scrypt(
        monkeypatch: pytest.MonkeyPatch) -> None:
    factory = ServiceFactory(FlowSettings(service_name="Acme", secret_key="warm-up " * 5))
    await warm_up(factory)
    disk = count_calls(monkeypatch, [(builtins, "open"), (io, "open"), (os, "stat"), (os, "listdir"),
                                     (os, "scandir"), (gettext, "find"), (gettext, "translation")])
    scrypt = count_calls(monkeypatch, [(directory, "_scrypt")])
    for language in (None, "en", "en-US", "de", "pt_BR", "xx"):
        assert translate("commands.start", language)
        assert "ABCD" in translate(Text("enrol.key", {"key": "ABCD", "minutes": 10}), language)
        assert translate(text("engine.no_case"), language)
    assert template("enrol.key")
    assert countries.name_of("de") == "Germany" and countries.search("germ") == ["DE"]
    assert factory.box.decoy_hash() == factory.box.decoy_hash()
    assert disk == [] and scrypt == []


async def test_the_app_warms_up_as_it_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    warmed: list[ServiceFactory | None] = []

    async def recording(services: ServiceFactory | None) -> None:
        warmed.append(services)

    monkeypatch.setattr(app, "warm_up", recording)
    factory = ServiceFactory(FlowSettings(service_name="Acme", secret_key="warm-up " * 5))
    bot = await Bot(MemoryStore(), make_engine(), FakeClock(), factory).start()
    await bot.stop()
    assert warmed == [factory]


def record_threads(monkeypatch: pytest.MonkeyPatch, module: object, name: str) -> list[int]:
    """The thread each later call of `module.name` runs in."""
    threads: list[int] = []
    real = getattr(module, name)

    def recording(*args: Any, **kwargs: Any) -> Any:
        threads.append(threading.get_ident())
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, recording)
    return threads


async def test_security_answers_are_checked_in_a_thread_with_the_same_work_for_unknown_accounts(
        db: AsyncEngine, clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> None:
    box = SecretBox("off the loop " * 4)
    async with db.begin() as conn:
        stamp = {"identity_verified": False, "two_factor": "phone", "created_at": clock.now(),
                 "updated_at": clock.now()}
        known = (await conn.execute(tables.accounts.insert().returning(tables.accounts.c.id), {
            "email": "jane@example.com", "security_question": "Pet?",
            "security_answer_hash": hash_answer("the cat", box.answer_pepper), **stamp})).scalar_one()
        bare = (await conn.execute(tables.accounts.insert().returning(tables.accounts.c.id),
                                   {"email": "john@example.com", **stamp})).scalar_one()
        found = TableDirectory(SqlAccounts(conn), box, clock.now())
        threads = record_threads(monkeypatch, directory, "_scrypt")
        assert not await found.verify_security_answer(directory.NO_ACCOUNT, "the cat")  # the decoy not made yet
        assert len(threads) == 2 and threading.get_ident() not in threads  # making it is off the loop too
        threads.clear()
        assert await found.verify_security_answer(known, "The Cat")
        assert not await found.verify_security_answer(known, "the dog")
        assert not await found.verify_security_answer(bare, "")
        assert not await found.verify_security_answer(directory.NO_ACCOUNT, "the cat")
    assert len(threads) == 4  # one scrypt per check, whether or not there is an answer to check
    assert threading.get_ident() not in threads


async def test_the_new_key_qr_code_is_drawn_off_the_event_loop(desk: Bot, monkeypatch: pytest.MonkeyPatch) -> None:
    user, admin = desk.chat(user_id=42), desk.chat(user_id=900)
    case_id = await submitted_case(desk, user)
    threads = record_threads(monkeypatch, enrol, "qr_png_base64")
    await admin.press(f"r:{case_id}:1:approve")
    assert [r for r in desk.transport.log if isinstance(r, SendPhoto) and r.chat_id == 42]
    assert len(threads) == 1 and threads[0] != threading.get_ident()


class QuietFront:
    """Just enough of a front end for `_serve`: no Telegram behind it."""

    name = "quiet"

    def __init__(self) -> None:
        self.transport = RecordingTransport()

    def attach(self, desk: Any) -> None:
        self.desk = desk

    async def set_commands(self, commands: Any, language: str | None = None) -> None:
        pass

    async def set_admin_commands(self, admin_ids: Any, commands: Any, language: str | None = None) -> None:
        pass

    async def set_description(self, description: str, short_description: str, language: str | None = None) -> None:
        pass

    async def delete_webhook(self) -> None:
        pass

    def refusal(self, error: Exception) -> None:
        return None

    async def fetch(self, offset: int | None, wait_seconds: int) -> Any:
        raise AssertionError("not polled in this test")

    async def process(self, update: Any) -> None:
        raise AssertionError("not polled in this test")


async def test_run_freezes_what_start_up_made_once_it_is_done_and_before_serving(
        monkeypatch: pytest.MonkeyPatch) -> None:
    frozen: list[str] = []
    monkeypatch.setattr(gc, "freeze", lambda: frozen.append("freeze"))
    monkeypatch.setattr(run, "_stop_on_signals", asyncio.Event)
    factory = ServiceFactory(FlowSettings(service_name="Acme", secret_key="warm-up " * 5))
    desk = Bot(MemoryStore(), make_engine(), FakeClock(), factory)

    class Poller:
        def __init__(self, fetch: Any, process: Any, desk: Any, feed: Any = None) -> None:
            pass

        async def run(self, stopping: asyncio.Event) -> None:
            assert desk.app.runner is not None  # the app had started
            frozen.append("serving")

    monkeypatch.setattr(run, "Poller", Poller)
    settings = Settings(_env_file=None, telegram_bot_token="1:x", secret_key="s" * 32)  # type: ignore[call-arg]
    await run._serve(desk.app, settings, cast(run.Front, QuietFront()), "desk_bot", None)
    assert frozen == ["freeze", "serving"]
