"""The out-of-band channels against a real local SMTP server (aiosmtpd) and a real local HTTP gateway (aiohttp)."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from email.utils import format_datetime
from typing import Any

import pytest
from aiohttp import web

from flows.channels import (
    MAX_RETRY_AFTER,
    ChannelRouter,
    ChannelUnavailable,
    OutOfBand,
    SmsWebhookChannel,
    SmsWebhookSettings,
    SmtpChannel,
    SmtpSettings,
    retry_after,
)
from flows.delivery import RetryAfter, Undeliverable
from tests.support.servers import Mailbox, free_port

CODE = "482913"
SENDER = "Recovery Desk <recovery@example.org>"
MAIL = OutOfBand("smtp", "alice@example.com", "Your verification code", f"Your code is {CODE}. Grüße!")
SMS = OutOfBand("sms", "+15551234534", "", f"Your code is {CODE}")


def smtp(port: int, username: str | None = None, password: str | None = None) -> SmtpChannel:
    settings = SmtpSettings(
        host="127.0.0.1", port=port, sender=SENDER, username=username, password=password, security="none", timeout=2.0
    )
    return SmtpChannel(settings)


async def test_mail_arrives_with_headers_and_body(mailbox: Mailbox) -> None:
    await smtp(mailbox.port).send(MAIL)
    message = mailbox.only_message()
    assert mailbox.received[0].mail_from == "recovery@example.org"
    assert mailbox.received[0].rcpt_tos == ["alice@example.com"]
    assert message["From"] == SENDER
    assert message["To"] == "alice@example.com"
    assert message["Subject"] == "Your verification code"
    assert message["Date"] and message["Message-ID"].endswith("@example.org>")
    assert message.get_content_charset() == "utf-8"
    assert message.get_content().strip() == MAIL.body
    assert mailbox.logins == []


async def test_mail_logs_in_when_a_username_is_set(mailbox: Mailbox) -> None:
    await smtp(mailbox.port, username="bot", password="s3cret").send(MAIL)
    assert mailbox.logins == [(b"bot", b"s3cret")]
    assert mailbox.only_message().get_content().strip() == MAIL.body


async def test_rejected_login_is_undeliverable(mailbox: Mailbox) -> None:
    with pytest.raises(Undeliverable, match="535"):
        await smtp(mailbox.port, username="bot", password="wrong").send(MAIL)
    assert mailbox.received == []


async def test_refused_recipient_is_undeliverable_without_the_code(mailbox: Mailbox) -> None:
    mailbox.answers["alice@example.com"] = "550 no such user"
    with pytest.raises(Undeliverable, match="550") as caught:
        await smtp(mailbox.port).send(MAIL)
    assert CODE not in str(caught.value)
    assert mailbox.received == []


async def test_deferred_recipient_is_retried(mailbox: Mailbox) -> None:
    mailbox.answers["alice@example.com"] = "451 greylisted, try again later"
    with pytest.raises(ChannelUnavailable):
        await smtp(mailbox.port).send(MAIL)


async def test_mail_server_down_is_transient() -> None:
    with pytest.raises(ChannelUnavailable) as caught:
        await smtp(free_port()).send(MAIL)
    assert not isinstance(caught.value, Undeliverable)


async def test_header_injection_is_undeliverable() -> None:
    forged = OutOfBand("smtp", "alice@example.com\r\nBcc: eve@example.com", "Code", CODE)
    with pytest.raises(Undeliverable):
        await smtp(free_port()).send(forged)


# -- a local SMS gateway ----------------------------------------------------------------------------------------


@dataclass
class Gateway:
    """An HTTP endpoint that records each request and answers with the status and headers it is given."""

    url: str = ""
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    requests: list[tuple[str | None, Any]] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append((request.headers.get("Authorization"), await request.json()))
        return web.json_response({"echo": "details"}, status=self.status, headers=self.headers)


@pytest.fixture
async def gateway() -> AsyncIterator[Gateway]:
    endpoint = Gateway()
    app = web.Application()
    app.router.add_post("/sms", endpoint.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    endpoint.url = f"http://127.0.0.1:{runner.addresses[0][1]}/sms"
    yield endpoint
    await runner.cleanup()


@pytest.fixture
async def sms(gateway: Gateway) -> AsyncIterator[SmsWebhookChannel]:
    channel = SmsWebhookChannel(SmsWebhookSettings(gateway.url, token="t0ken", timeout=2.0))
    yield channel
    await channel.close()


async def test_sms_posts_json_with_bearer_token(gateway: Gateway, sms: SmsWebhookChannel) -> None:
    await sms.send(SMS)
    await sms.send(SMS)
    expected = ("Bearer t0ken", {"to": "+15551234534", "message": f"Your code is {CODE}"})
    assert gateway.requests == [expected, expected]


async def test_sms_without_token_sends_no_authorization(gateway: Gateway) -> None:
    channel = SmsWebhookChannel(SmsWebhookSettings(gateway.url))
    await channel.send(SMS)
    await channel.close()
    assert gateway.requests[0][0] is None


async def test_sms_rate_limit_names_the_pause(gateway: Gateway, sms: SmsWebhookChannel) -> None:
    gateway.status, gateway.headers = 429, {"Retry-After": "7"}
    with pytest.raises(RetryAfter) as caught:
        await sms.send(SMS)
    assert caught.value.seconds == 7


async def test_sms_rate_limit_without_pause_is_transient(gateway: Gateway, sms: SmsWebhookChannel) -> None:
    gateway.status = 429
    with pytest.raises(ChannelUnavailable):
        await sms.send(SMS)


async def test_sms_rejected_request_is_undeliverable(gateway: Gateway, sms: SmsWebhookChannel) -> None:
    gateway.status = 400
    with pytest.raises(Undeliverable, match="400") as caught:
        await sms.send(SMS)
    assert CODE not in str(caught.value)


async def test_sms_gateway_outage_is_transient(gateway: Gateway, sms: SmsWebhookChannel) -> None:
    gateway.status = 503
    with pytest.raises(ChannelUnavailable, match="503"):
        await sms.send(SMS)


async def test_sms_gateway_down_is_transient() -> None:
    channel = SmsWebhookChannel(SmsWebhookSettings(f"http://127.0.0.1:{free_port()}/sms", timeout=2.0))
    with pytest.raises(ChannelUnavailable):
        await channel.send(SMS)
    await channel.close()


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        (None, None),
        ("7", 7.0),
        ("1.5", 1.5),
        ("-3", 0.0),
        ("86400", MAX_RETRY_AFTER),
        ("soon", None),
        (format_datetime(dt.datetime(2000, 1, 1, tzinfo=dt.UTC), usegmt=True), 0.0),
    ],
)
def test_retry_after_header(header: str | None, seconds: float | None) -> None:
    assert retry_after(header) == seconds


# -- routing ----------------------------------------------------------------------------------------------------


@dataclass
class Recorder:
    sent: list[OutOfBand] = field(default_factory=list)
    closed: bool = False

    async def send(self, message: OutOfBand) -> None:
        self.sent.append(message)

    async def close(self) -> None:
        self.closed = True


@dataclass
class Unclosable:
    async def send(self, message: OutOfBand) -> None:
        raise AssertionError("not used")


async def test_router_dispatches_by_channel_and_closes_senders() -> None:
    mail, phone = Recorder(), Recorder()
    router = ChannelRouter({"smtp": mail, "sms": phone})
    await router.send(MAIL)
    await router.send(SMS)
    await router.close()
    assert (mail.sent, phone.sent) == ([MAIL], [SMS])
    assert mail.closed and phone.closed


async def test_router_refuses_an_unconfigured_channel() -> None:
    router = ChannelRouter({"smtp": Unclosable()})
    with pytest.raises(Undeliverable, match="sms"):
        await router.send(SMS)
    await router.close()
