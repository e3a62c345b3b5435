"""Out-of-band delivery of verification codes: e-mail over SMTP and SMS through an HTTP webhook.

The outbox dispatcher calls a sender after the event committed, one message at a time. A sender returns when the
message was handed over, raises `Undeliverable` when retrying can never help (the message is recorded and dropped),
`RetryAfter` when the provider names a pause, and anything else (`ChannelUnavailable` here) for a passing fault that
is retried with a growing delay. The body carries a code, so it never appears in a log line or an exception message.
"""

from __future__ import annotations

import asyncio
import smtplib
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import formatdate, make_msgid, parseaddr, parsedate_to_datetime
from typing import Literal, Protocol, runtime_checkable

import httpx

from flows.delivery import RetryAfter, Undeliverable
from flows.replies import Notify, Reply

ChannelName = Literal["smtp", "sms"]
MAX_RETRY_AFTER = 300.0


@dataclass(frozen=True)
class OutOfBand:
    """One message to send outside the chat."""

    channel: ChannelName
    to: str
    subject: str
    body: str


class ChannelSender(Protocol):
    async def send(self, message: OutOfBand) -> None:
        """Hand one message to the provider, or raise as described in the module docstring."""
        ...


@runtime_checkable
class Closable(Protocol):
    async def close(self) -> None: ...


class ChannelUnavailable(Exception):
    """A passing fault (network, 4xx from a mail server, 5xx from a webhook): the dispatcher retries later."""


# -- e-mail -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class SmtpSettings:
    host: str
    port: int = 587
    username: str | None = None
    password: str | None = None
    sender: str
    security: Literal["starttls", "ssl", "none"] = "starttls"
    timeout: float = 15.0


class SmtpChannel(ChannelSender):
    """Sends plain-text mail with the standard library's smtplib, in a worker thread."""

    def __init__(self, settings: SmtpSettings) -> None:
        self.settings = settings

    async def send(self, message: OutOfBand) -> None:
        email = compose(self.settings.sender, message)
        try:
            await asyncio.to_thread(self._transmit, email)
        except OSError as error:
            raise classify_smtp_error(error) from error

    def _transmit(self, email: EmailMessage) -> None:
        with self._connect() as smtp:
            if self.settings.security == "starttls":
                smtp.starttls(context=ssl.create_default_context())
            if self.settings.username is not None:
                smtp.login(self.settings.username, self.settings.password or "")
            smtp.send_message(email)

    def _connect(self) -> smtplib.SMTP:
        s = self.settings
        if s.security == "ssl":
            return smtplib.SMTP_SSL(s.host, s.port, timeout=s.timeout, context=ssl.create_default_context())
        return smtplib.SMTP(s.host, s.port, timeout=s.timeout)


def compose(sender: str, message: OutOfBand) -> EmailMessage:
    email = EmailMessage()
    try:
        email["From"] = sender
        email["To"] = message.to
        email["Subject"] = message.subject
    except ValueError as error:
        raise Undeliverable(f"cannot address the e-mail: {error}") from None
    email["Date"] = formatdate(usegmt=True)
    email["Message-ID"] = make_msgid(domain=address_domain(sender))
    email.set_content(message.body, charset="utf-8")
    return email


def address_domain(address: str) -> str:
    return parseaddr(address)[1].rpartition("@")[2] or "localhost"


def classify_smtp_error(error: OSError) -> Exception:
    """Map what smtplib raised to Undeliverable (permanent) or ChannelUnavailable (retry later)."""
    if isinstance(error, smtplib.SMTPRecipientsRefused):
        codes = [code for code, _ in error.recipients.values()]
        if codes and all(permanent(code) for code in codes):
            return Undeliverable(f"smtp server refused the recipient ({', '.join(map(str, codes))})")
        return ChannelUnavailable(f"smtp server deferred the recipient ({', '.join(map(str, codes))})")
    if isinstance(error, smtplib.SMTPResponseException) and permanent(error.smtp_code):
        return Undeliverable(f"smtp server answered {error.smtp_code} ({type(error).__name__})")
    if isinstance(error, smtplib.SMTPNotSupportedError):
        return Undeliverable(f"smtp server lacks a needed extension: {error}")
    return ChannelUnavailable(f"smtp: {type(error).__name__}")


def permanent(smtp_code: int) -> bool:
    return 500 <= smtp_code < 600


# -- SMS --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SmsWebhookSettings:
    url: str
    token: str | None = None
    timeout: float = 10.0


class SmsWebhookChannel(ChannelSender):
    """POSTs `{"to": ..., "message": ...}` as JSON to a gateway of the operator's choice."""

    def __init__(self, settings: SmsWebhookSettings) -> None:
        self.settings = settings
        headers = {"Authorization": f"Bearer {settings.token}"} if settings.token else {}
        self._client = httpx.AsyncClient(timeout=settings.timeout, headers=headers)

    async def send(self, message: OutOfBand) -> None:
        payload = {"to": message.to, "message": message.body}
        try:
            response = await self._client.post(self.settings.url, json=payload)
        except httpx.HTTPError as error:
            raise ChannelUnavailable(f"sms webhook: {type(error).__name__}") from None
        check_webhook_status(response)

    async def close(self) -> None:
        await self._client.aclose()


def check_webhook_status(response: httpx.Response) -> None:
    """Return on 2xx; otherwise raise by status. The response text is never quoted: a gateway may echo the code."""
    status = response.status_code
    if 200 <= status < 300:
        return
    if status == 429 and (pause := retry_after(response.headers.get("Retry-After"))) is not None:
        raise RetryAfter(pause)
    if status >= 500 or status in (408, 429):
        raise ChannelUnavailable(f"sms webhook answered {status}")
    raise Undeliverable(f"sms webhook answered {status}")


def retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP date), capped at MAX_RETRY_AFTER."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = (parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds()
        except (TypeError, ValueError):
            return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


# -- routing ----------------------------------------------------------------------------------------------------


class ChannelRouter(ChannelSender):
    """Sends each message through the sender configured for its channel."""

    def __init__(self, senders: Mapping[str, ChannelSender]) -> None:
        self._senders = dict(senders)

    async def send(self, message: OutOfBand) -> None:
        sender = self._senders.get(message.channel)
        if sender is None:
            raise Undeliverable(f"no {message.channel} channel is configured")
        await sender.send(message)

    async def close(self) -> None:
        distinct = {id(sender): sender for sender in self._senders.values()}
        for sender in distinct.values():
            if isinstance(sender, Closable):
                await sender.close()


class ChannelTransport:
    """The outbox's view of the channels: delivers `Notify` replies through a router."""

    def __init__(self, router: ChannelRouter) -> None:
        self.router = router

    async def deliver(self, reply: Reply) -> int | None:
        if not isinstance(reply, Notify):
            raise Undeliverable(f"{type(reply).__name__} is not an out-of-band message")
        channel: ChannelName = "smtp" if reply.channel == "smtp" else "sms"
        await self.router.send(OutOfBand(channel, reply.to, reply.subject, reply.body))
        return None
