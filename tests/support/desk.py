"""The real desk (menu and the three methods) over a real database with a few accounts, for flow tests."""

from __future__ import annotations

import re
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncEngine

from flows.accounts_csv import import_accounts
from flows.clock import FakeClock
from flows.delivery import Transport
from flows.desk import build_engine
from flows.events import FileInfo
from flows.ports import Store
from flows.records import StoredAccount
from flows.services import FlowSettings, ServiceFactory
from flows.store.database import SqlStore
from tests.support.chat import Bot, Chat

SECRET_KEY = "test-secret-key-" + "k" * 32
ADA_TOTP = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
BEN_TOTP = "GEZDGNBVGY3TQOJQ"  # 16 characters: 80 bits, as many existing keys are
ACCOUNTS_CSV = (
    "email,phone,totp_secret,security_question,security_answer,identity_verified\n"
    f"ada@example.com,+15551234534,{ADA_TOTP},What was your first pet's name?,Rex,false\n"
    f"ben@example.com,+442071234567,{BEN_TOTP},,,true\n"
)


async def open_desk(
    db: AsyncEngine | Store,
    clock: FakeClock,
    code_channels: dict[str, str] | None = None,
    channels: Transport | None = None,
) -> Bot:
    """The desk for "Acme" with Ada and Ben's accounts; codes shown in the chat unless `code_channels` say else."""
    settings = FlowSettings(service_name="Acme", secret_key=SECRET_KEY, admin_ids=(900, 901),
                            code_channels=code_channels or {"phone": "chat", "email": "chat"})
    factory = ServiceFactory(settings)
    store = SqlStore(db) if isinstance(db, AsyncEngine) else db
    async with store.transaction() as tx:
        report = await import_accounts(tx.accounts, ACCOUNTS_CSV, factory.box, clock.now())
        assert not report.errors, report.errors
    return await Bot(db, build_engine(settings), clock, factory, channels).start()


def totp_now(secret: str, at: datetime, steps: int = 0) -> str:
    """What an authenticator app with `secret` shows at `at` (optionally `steps` windows later)."""
    return _hotp(secret, int(at.timestamp()) // 30 + steps)


def _hotp(secret: str, counter: int) -> str:
    import base64
    import hashlib
    import hmac
    import struct

    digest = hmac.new(base64.b32decode(secret), struct.pack(">Q", counter), hashlib.sha1).digest()
    offset = digest[-1] & 0x0F
    value = struct.unpack(">I", digest[offset : offset + 4])[0] & 0x7FFFFFFF
    return f"{value % 1_000_000:06d}"


def code_in(messages: list[str], factor: str = "SMS") -> str:
    """The code the `chat` channel showed for `factor` ("SMS" or "Email")."""
    for message in reversed(messages):
        found = re.search(rf"{factor} to \S+: (\d{{6}})", message)
        if found:
            return found.group(1)
    raise AssertionError(f"no {factor} code in {messages}")


async def account(db: AsyncEngine | Store, email: str) -> StoredAccount:
    async with (SqlStore(db) if isinstance(db, AsyncEngine) else db).reading() as tx:
        found = await tx.accounts.by_email(email)
    assert found is not None, email
    return found


async def begin(chat: Chat, method: str, email: str) -> list[str]:
    """/start, choose a method, give the email; returns the replies to the email."""
    await chat.send("/start")
    await chat.tap(method)
    return await chat.send(email)


async def request_codes(chat: Chat, email: str, restore: str = "Email address") -> list[str]:
    """Method 2 from /start up to pressing Get Code; returns the replies to that press."""
    await chat.send("/start")
    await chat.tap("Security Check Not Available")
    await chat.tap("Continue")
    await chat.send(email)
    await chat.tap(restore)
    await chat.tap("Confirm Restore")
    return await chat.tap("Get Code")


async def submit_for_review(
    chat: Chat, email: str = "ben@example.com", selfie: FileInfo | None = None, submit: bool = True,
    restore: str = "Authenticator app",
) -> None:
    """Method 2 up to the review queue (Ben's account: verified, no security question, so a selfie will do);
    with `submit=False`, up to the Submit button."""
    replies = await request_codes(chat, email, restore)
    await chat.send(code_in(replies, "SMS"))
    await chat.send(code_in(replies, "Email"))
    await chat.tap("Send")
    await chat.tap("Next")
    await chat.send_file(selfie or FileInfo("selfie-1", "u-selfie-1", "photo", 1000))
    if submit:
        await chat.tap("Submit for review")


async def submit_documents_for_review(chat: Chat, front: FileInfo, back: FileInfo, selfie: FileInfo) -> None:
    """Method 2 for Ada (security question, not verified): a national ID card's front and back, then a selfie."""
    replies = await request_codes(chat, "ada@example.com", "Authenticator app")
    await chat.send(code_in(replies, "SMS"))
    await chat.send(code_in(replies, "Email"))
    await chat.tap("Send")
    await chat.tap("Start answering questions")
    await chat.send("Rex")
    await chat.tap("Next")
    await chat.send("germany")
    await chat.tap("National ID card")
    for file in (front, back, selfie):
        await chat.send_file(file)
    await chat.tap("Submit for review")


def photo(file_id: str) -> FileInfo:
    return FileInfo(file_id, f"u-{file_id}", "photo", 1000, "image/jpeg")


def scan(file_id: str) -> FileInfo:
    """An image sent as a file (a document), as people do to avoid compression."""
    return FileInfo(file_id, f"u-{file_id}", "document", 1000, "image/png")
