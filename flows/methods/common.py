"""Steps and checks shared by the recovery methods: asking for the account's email without revealing it."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from flows.codes import Refused
from flows.directory import LOCK_WITHDRAWALS, NO_ACCOUNT, AccountView, Change, mask_email, mask_phone
from flows.model import Accepts, Action, AuditLine, Context, Goto, Notice, Outcome, Stay, Step, TimerSpec, leads_to
from flows.moments import time_of_day
from flows.otp import normalize_code
from flows.records import Case
from flows.services import Services
from flows.texts import Text, count, text

EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]{2,}$")


def services(ctx: Context) -> Services:
    return cast(Services, ctx.services)


def ask_email_step(next_step: str) -> Step:
    """Ask for the email; known or not, the replies are the same and the case moves on."""

    @leads_to(next_step)
    async def take_email(ctx: Context) -> Outcome:
        email = ctx.text.strip().lower()
        if len(email) > 320 or not EMAIL.match(email):
            return Stay(say=(text("common.bad_email"),))
        account = await services(ctx).directory.find_by_email(email)
        return Goto(next_step, data={"email": email, "account_id": account.id if account else None})

    return Step("ask_email", prompt="common.ask_email", accepts=Accepts.TEXT, on_input=take_email,
                expects="email")


def lock_hours(ctx: Context) -> dict[str, object]:
    """The withdrawal lock in whole hours, for texts that announce it."""
    return {"hours": count("hours", int(services(ctx).settings.withdrawal_lock.total_seconds() // 3600))}


async def withdrawal_lock(ctx: Context, account_id: int) -> tuple[Change, datetime]:
    """The change that locks withdrawals for the configured time from now, and until when they will then be
    locked (a later lock in force stays: a lock only extends)."""
    until = ctx.now + services(ctx).settings.withdrawal_lock
    current = await services(ctx).directory.withdrawal_lock(account_id)
    return Change(LOCK_WITHDRAWALS, until=until), max(until, current) if current else until


async def change_account(ctx: Context, case: Case | None, account_id: int, changes: Sequence[Change],
                         then: Sequence[Text]) -> tuple[Text, ...]:
    """Make the changes this event decides, once (keyed by the event); what to tell the user now: `then`, or
    that they are being applied when the service confirms them later."""
    return await services(ctx).changes.request(account_id, changes, ctx.event.key, case, then)


def count_wrong(ctx: Context, key: str, limit: int) -> tuple[dict[str, Any], int]:
    """Data with one more wrong try under `key`, and how many tries are left of `limit`."""
    wrong = int(ctx.data.get(key, 0)) + 1
    return {key: wrong}, max(0, limit - wrong)


def chat_code_message(factor: str, destination: str, code: str) -> Text:
    """The `chat` channel: the code shown in the chat, labelled with the factor it stands for."""
    return Text(f"codes.chat_{factor}", {"destination": destination, "code": code}, sensitive=True)


@dataclass(frozen=True)
class CodeSending:
    """What sending a code comes to: whether it went, what to say, data to keep, and any email or SMS."""

    sent: bool
    say: tuple[Text, ...]
    data: dict[str, Any] = field(default_factory=dict)
    notify: tuple[Notice, ...] = ()
    timers: tuple[TimerSpec, ...] = ()


REMIND_BEFORE_EXPIRY = timedelta(minutes=5)


def code_timers(ctx: Context) -> tuple[TimerSpec, ...]:
    """A reminder five minutes before the codes expire, and the expiry itself, while the case is at a step that
    waits for a code (one with `on_code_timers`)."""
    expires = ctx.now + services(ctx).settings.code_ttl
    timers = [TimerSpec("codes_expired", expires, replace=True)]
    if services(ctx).settings.code_ttl > REMIND_BEFORE_EXPIRY * 2:
        timers.append(TimerSpec("codes_reminder", expires - REMIND_BEFORE_EXPIRY, replace=True))
    return tuple(timers)


def code_expiry(ctx: Context, factor: str) -> datetime | None:
    """When the code last sent for `factor` expires (the same for real and unknown accounts)."""
    sent_at = ctx.data.get(f"{factor}_sent_at")
    if sent_at is None:
        return None
    return datetime.fromtimestamp(float(sent_at), UTC) + services(ctx).settings.code_ttl


def on_code_timers(factor: str) -> dict[str, Action]:
    """Timer handlers for a step that waits for a code of `factor`."""

    async def remind(ctx: Context) -> Outcome:
        expires = code_expiry(ctx, factor)
        if expires is None:  # no code sent (the timer outlived it)
            return Stay(show_prompt=False)
        return Stay(say=(text("codes.reminder", time=time_of_day(expires, ctx.language)),), show_prompt=False)

    async def expired(ctx: Context) -> Outcome:
        return Stay(say=(text("codes.expired_now"),))

    return {"codes_reminder": remind, "codes_expired": expired}


async def send_code(ctx: Context, factor: str) -> CodeSending:
    """Send a code for `factor` ("phone" or "email") to the account on file, if there is one.

    The reply, and the work done, are the same whether or not the account exists, has that factor, is paused or
    has used up its hourly codes: in each of those cases a decoy is issued that is checked like a code but
    reaches nobody. A real code goes through the factor's channel: shown in the chat (`chat`), or as an SMS or
    email.
    """
    svc = services(ctx)
    sent_key = f"{factor}_sent_at"
    last = ctx.data.get(sent_key)
    cooldown = svc.codes.policy.resend_cooldown.total_seconds()  # the one policy: flows.codes.CodePolicy
    if last is not None and ctx.now.timestamp() - float(last) < cooldown:
        retry = ctx.now.timestamp() - float(last)
        wait = int(cooldown - retry) + 1
        return CodeSending(False, (text("codes.cooldown", seconds=wait),))
    account = await account_on_file(ctx)
    destination = None if account is None else (account.phone if factor == "phone" else account.email)
    paused = await svc.failures.paused(account.id if account else None)
    reachable = account is not None and destination is not None and not paused
    data: dict[str, Any] = {sent_key: ctx.now.timestamp(), f"{factor}_wrong": 0}
    minutes = count("minutes", int(svc.settings.code_ttl.total_seconds() // 60))
    said: tuple[Text, ...] = (text(f"codes.sent_{factor}", minutes=minutes),)
    case_id = ctx.case.id if ctx.case else ""
    issued = await svc.codes.issue(account.id if reachable and account else None, case_id, factor,
                                   ctx.event.sender.user_id)
    if isinstance(issued, Refused) or issued.decoy or destination is None:  # the same reply: nothing tells
        return CodeSending(True, said, data)
    channel = svc.settings.code_channels.get(factor, "chat")
    if channel == "chat":
        return CodeSending(True, (*said, chat_code_message(factor, _mask(factor, destination), issued.code)), data)
    notice = Notice(channel, destination, text("codes.subject"), text(f"codes.{channel}_body", code=issued.code,
                                                                        minutes=minutes))
    return CodeSending(True, said, data, (notice,))


async def send_codes(ctx: Context, factors: tuple[str, ...]) -> CodeSending:
    """One press, a code for each factor (stops at the first that may not be sent yet)."""
    said: list[Text] = []
    data: dict[str, Any] = {}
    notices: list[Notice] = []
    for factor in factors:
        sending = await send_code(ctx, factor)
        if not sending.sent:
            return sending
        said.extend(sending.say)
        data.update(sending.data)
        notices.extend(sending.notify)
    return CodeSending(True, tuple(said), data, tuple(notices))


async def account_on_file(ctx: Context) -> AccountView | None:
    """The case's account; for an unknown email the same lookup runs and finds nothing."""
    account_id = ctx.data.get("account_id")
    return await services(ctx).directory.get(int(account_id) if account_id is not None else NO_ACCOUNT)


def _mask(factor: str, destination: str) -> str:
    return mask_phone(destination) if factor == "phone" else mask_email(destination)


CODE_DIGITS = 6


@dataclass(frozen=True)
class CodeCheck:
    """What checking a typed code came to, with what to add to the outcome when it failed."""

    status: str
    tries_left: int
    notify: tuple[Notice, ...] = ()
    audit: tuple[AuditLine, ...] = ()


async def check_code(ctx: Context, factor: str) -> CodeCheck:
    """Check the code the user typed against the case's newest code (a decoy for unknown accounts, which never
    matches); a wrong one counts against the account's failed-check limit. What is not 6 digits at all is a
    typo, not a guess: it is answered so, and costs no try (the same for every account, with no lookup)."""
    if len(normalize_code(ctx.text)) != CODE_DIGITS:
        return CodeCheck("not_a_code", 0)
    svc = services(ctx)
    account_id = ctx.data.get("account_id")
    paused = await svc.failures.paused(int(account_id) if account_id is not None else None)
    result = await svc.codes.check(ctx.case.id if ctx.case else "", factor, ctx.text, paused=paused)
    if not result.failed:
        return CodeCheck(result.status, result.tries_left)
    notify, audit = await failed_check(ctx, factor)
    return CodeCheck(result.status, result.tries_left, notify, audit)


async def failed_check(ctx: Context, factor: str) -> tuple[tuple[Notice, ...], tuple[AuditLine, ...]]:
    """Count a failed check against the case's account (for an unknown email, the same work, counted for nobody).
    When it pauses the account's recovery, the owner is told by email (never in this chat) and it is audited."""
    if ctx.case is None:
        return (), ()
    svc = services(ctx)
    account_id = ctx.data.get("account_id")
    known = int(account_id) if account_id is not None else None
    if not await svc.failures.record(known, factor, ctx.event.sender.user_id, ctx.case.id):
        return (), ()
    audit: AuditLine = ("account.recovery_paused", f"account:{known}", {"case": ctx.case.id, "factor": factor})
    account = await svc.directory.get(known or NO_ACCOUNT)
    return owner_email(svc, account, "limits.paused_email"), (audit,)


def owner_email(svc: Services, account: AccountView | None, key: str, **params: object) -> tuple[Notice, ...]:
    """A notice to the address on file, where SMTP is set up: a channel the person in the chat may not control."""
    if account is None or svc.settings.code_channels.get("email") != "smtp":
        return ()
    return (Notice("smtp", account.email, text(f"{key}_subject"), text(f"{key}_body", **params)),)
