"""Real local servers for tests: an SMTP server (aiosmtpd) and an SMS gateway (aiohttp) that keep what they receive."""

from __future__ import annotations

import email
import email.policy
import re
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

import pytest
from aiohttp import web
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class Mailbox:
    """An aiosmtpd handler that keeps what it receives and answers RCPT as told."""

    port: int = 0
    received: list[Envelope] = field(default_factory=list)
    answers: dict[str, str] = field(default_factory=dict)
    logins: list[tuple[bytes, bytes]] = field(default_factory=list)

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        answer = self.answers.get(address, "250 OK")
        if answer.startswith("250"):
            envelope.rcpt_tos.append(address)
        return answer

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.received.append(envelope)
        return "250 Message accepted for delivery"

    def authenticate(self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any) -> AuthResult:
        assert isinstance(data, LoginPassword)
        self.logins.append((data.login, data.password))
        return AuthResult(success=data.password == b"s3cret", handled=False)

    def only_message(self) -> EmailMessage:
        assert len(self.received) == 1
        return self.message(0)

    def message(self, index: int) -> EmailMessage:
        """The message received at `index` (-1: the newest), parsed."""
        content = self.received[index].content
        assert isinstance(content, bytes)
        parsed = email.message_from_bytes(content, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        return parsed


@pytest.fixture
def mailbox() -> Iterator[Mailbox]:
    box = Mailbox(port=free_port())
    server = Controller(
        box, hostname="127.0.0.1", port=box.port, auth_require_tls=False, authenticator=box.authenticate
    )
    server.start()
    yield box
    server.stop()


class SmsGateway:
    """A stand-in for the operator's SMS provider: a real HTTP server that keeps what it is asked to send."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.port = free_port()
        self.runner: web.AppRunner | None = None

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/sms", self.receive)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()
        return f"http://127.0.0.1:{self.port}/sms"

    async def receive(self, request: web.Request) -> web.Response:
        self.received.append({"auth": request.headers.get("Authorization"), **await request.json()})
        return web.json_response({"queued": True})

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


def mailed_code(mailbox: Mailbox) -> str:
    body = mailbox.only_message().get_content()
    found = re.search(r"code is (\d{6})", body)
    assert found is not None, body
    return found.group(1)
