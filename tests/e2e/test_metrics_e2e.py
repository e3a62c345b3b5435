"""`GET /metrics` and `GET /healthz` of the real `recovery-bot run` process, in long polling (on HTTP_PORT) and in
webhook mode (on the webhook's port), while a user goes through Method 1 up to its second code."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.test_telegram_e2e import start_in_webhook_mode
from tests.support.botapi import BotApiServer
from tests.support.e2e import BotProcess, TgUser, prepare_database, sqlite_write_lock_held
from tests.support.servers import free_port

README = Path(__file__).resolve().parents[2] / "README.md"
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


class Desk:
    """A running bot process, the address of its /metrics and /healthz, and how updates reach it."""

    def __init__(self, server: BotApiServer, process: BotProcess, base: str, webhook: bool) -> None:
        self.server = server
        self.process = process
        self.base = base
        self.webhook = webhook

    async def deliver(self, update: dict[str, Any]) -> None:
        """Polling fetches the update by itself; a webhook is sent it, and answers 200 once it is committed."""
        if self.webhook:
            assert await self.server.push_update_to_webhook(update) == 200

    async def scrape(self) -> Samples:
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for family in text_string_to_metric_families(await self.metrics_text()) for s in family.samples}

    async def metrics_text(self) -> str:
        async with ClientSession() as http, http.get(f"{self.base}/metrics") as response:
            assert response.status == 200
            assert response.content_type == "text/plain"
            return await response.text()

    async def health(self) -> tuple[int, dict[str, Any]]:
        async with ClientSession() as http, http.get(f"{self.base}/healthz") as response:
            body: dict[str, Any] = await response.json()
            return response.status, body


@asynccontextmanager
async def desk_in(mode: str, server: BotApiServer, framework: str, tmp_path: Path) -> AsyncIterator[Desk]:
    if mode == "webhook":
        process, _, port = await start_in_webhook_mode(server, framework, tmp_path, None)
    else:
        port = free_port()
        process = BotProcess(server, framework, tmp_path, HTTP_PORT=str(port))
        await prepare_database(process.database_url)
        await process.start()
    try:
        yield Desk(server, process, f"http://127.0.0.1:{port}", webhook=mode == "webhook")
    finally:
        assert await process.stop() == 0, process.log.read_text()[-3000:]


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def moved(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


async def replied(user: TgUser, timeout: float = 15.0) -> None:  # noqa: ASYNC109
    """Wait for any message from the bot since the user's last action."""
    await user.server.wait_for(
        lambda c: c.method == "sendMessage" and c.ok and str(c.params.get("chat_id")) == str(user.user_id),
        timeout, since=user.mark,
    )


@pytest.mark.parametrize(("mode", "framework"), [("polling", "ptb"), ("polling", "aiogram"), ("webhook", "ptb"),
                                               ("webhook", "aiogram")])
async def test_metrics_count_a_walk_through_method_one_and_healthz_says_ok(
        server: BotApiServer, mode: str, framework: str, tmp_path: Path) -> None:
    async with desk_in(mode, server, framework, tmp_path) as desk:
        status, health = await desk.health()
        assert status == 200 and health["ok"] and health["database"]["ok"]
        assert health["updates"]["mode"] == mode and health["updates"]["ok"]
        before = await desk.scrape()

        user = TgUser(server, 150)
        await desk.deliver(user.send("/start"))
        await user.expect("Welcome")
        await desk.deliver(user.tap("Switch to phone verification"))
        await user.expect("Which email address")
        await desk.deliver(user.send("ada@example.com"))
        await user.expect("Press Get Code")
        await desk.deliver(user.tap("Get Code"))
        await user.expect("code from the SMS")
        await desk.deliver(user.send("000000" if user.last_code("SMS") != "000000" else "111111"))
        await replied(user)
        await desk.deliver(user.send(user.last_code("SMS")))
        await user.expect("code from the email")
        after = await desk.scrape()

        events = "recovery_bot_events_handled_total"
        assert moved(before, after, events, kind="command") == 1
        assert moved(before, after, events, kind="button") == 2
        assert moved(before, after, events, kind="message") == 3
        codes = "recovery_bot_codes_total"
        assert moved(before, after, codes, outcome="sent", factor="phone") == 1
        assert moved(before, after, codes, outcome="sent", factor="email") == 1
        assert moved(before, after, codes, outcome="failed", factor="phone") == 1
        assert moved(before, after, codes, outcome="verified", factor="phone") == 1
        assert moved(before, after, codes, outcome="verified", factor="email") == 0
        assert moved(before, after, "recovery_bot_cases_opened_total", method="phone") == 1
        assert moved(before, after, "recovery_bot_batch_commit_seconds_count") >= 6
        assert moved(before, after, "recovery_bot_deliveries_total", lane="chat", outcome="sent") > 0
        assert value(after, "recovery_bot_review_queue_cases") == 0

        status, health = await desk.health()
        assert status == 200 and health["ok"]
        if mode == "webhook":
            assert health["updates"]["last_update_seconds_ago"] is not None
        else:
            assert health["updates"]["last_ok_seconds_ago"] is not None
            assert health["updates"]["failing_for_seconds"] is None


async def test_every_metric_the_readme_names_is_served(server: BotApiServer, tmp_path: Path) -> None:
    section = README.read_text().split("## Metrics and health", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"`(recovery_bot_[a-z_]+)`", section))
    assert len(documented) >= 10
    async with desk_in("polling", server, "ptb", tmp_path) as desk:
        families = list(text_string_to_metric_families(await desk.metrics_text()))
    served = {f.name for f in families} | {f"{f.name}_total" for f in families if f.type == "counter"}
    missing = {name for name in documented if name not in served}
    assert not missing, f"documented but not served: {missing}"


async def health_becomes(desk: Desk, wanted: int, timeout: float = 45.0) -> dict[str, Any]:  # noqa: ASYNC109
    async with asyncio.timeout(timeout):
        while True:
            status, body = await desk.health()
            if status == wanted:
                return body
            await asyncio.sleep(0.5)


async def test_healthz_says_503_while_the_database_is_locked_and_200_once_it_is_back(
        server: BotApiServer, tmp_path: Path) -> None:
    async with desk_in("polling", server, "ptb", tmp_path) as desk:
        user = TgUser(server, 151)
        with sqlite_write_lock_held(tmp_path / "desk.db"):
            user.send("/start")
            body = await health_becomes(desk, 503)
            assert body["ok"] is False and body["database"]["ok"] is False
            assert body["updates"]["ok"]  # Telegram itself answers: only the database is down
        await user.expect("Welcome", timeout=60)
        body = await health_becomes(desk, 200)
        assert body["ok"] and body["database"]["ok"]


async def test_with_http_port_set_a_webhook_desk_serves_its_metrics_there_and_not_on_the_webhook(
        server: BotApiServer, tmp_path: Path) -> None:
    hook, own = free_port(), free_port()
    url = f"http://127.0.0.1:{hook}/telegram/hook"
    process = BotProcess(server, "ptb", tmp_path, "--webhook-url", url, "--port", str(hook), "--host", "127.0.0.1",
                         HTTP_PORT=str(own))
    await prepare_database(process.database_url)
    await process.start(ready_method="setWebhook")
    try:
        await server.wait_for(lambda c: c.method == "setWebhook" and c.ok)
        async with ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{hook}/metrics") as public:
                assert public.status == 404
            async with http.get(f"http://127.0.0.1:{own}/metrics") as private:
                assert private.status == 200 and "recovery_bot_events_handled_total" in await private.text()
            for port in (hook, own):
                async with http.get(f"http://127.0.0.1:{port}/healthz") as health:
                    assert health.status == 200 and (await health.json())["updates"]["mode"] == "webhook"
    finally:
        assert await process.stop() == 0, process.log.read_text()[-3000:]
