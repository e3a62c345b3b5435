"""Staff: the review decisions that complete Method 2, and the admin commands.

Admins are the user ids in ADMIN_IDS. Anyone else who uses an admin command gets the same reply as for an
unknown command (the attempt is audited), and a staff button pressed by someone else has simply expired.
"""

from __future__ import annotations

import asyncio
import base64
import re
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from flows.changes import text_to_json
from flows.directory import REMOVE_PHONE, RESET_TWO_FACTOR, Change
from flows.events import ButtonPressed, CommandReceived, Event
from flows.methods.common import change_account, lock_hours, owner_email, services, withdrawal_lock
from flows.methods.enrol import new_authenticator
from flows.methods.reverify import RESTORABLE, REVERIFY
from flows.model import Action, Close, Context, Goto, Letter, OnCase, Outcome, Say, Stay, TimerSpec
from flows.moments import moment
from flows.records import Case
from flows.review import PHOTO_SLOTS, age, evidence_shown, pending_reviews, recent_audit, review_card
from flows.stats import collect, funnel_chart, stats_lines
from flows.texts import Text, text

REVIEW_DATA = re.compile(r"^r:([A-Za-z0-9_-]{12}):(\d{1,4}):([a-z_]{1,16})$")
CASE_ID = re.compile(r"^[A-Za-z0-9_-]{12}$")
REASONS = ("docs", "mismatch", "fraud")
DECIDED = ("approved", "rejected")
TARGETED_COMMANDS = ("case", "reject")
ENROL = REVERIFY.entry("enrol")  # approved, with a new authenticator to set up
RESTORED = REVERIFY.entry("restored")  # approved, nothing to set up
MORE_DOCUMENTS = REVERIFY.entry("documents")  # staff asked for more


def is_admin(ctx: Context) -> bool:
    """Whether the event's sender is staff (see `FlowSettings.is_admin`)."""
    return services(ctx).settings.is_admin(ctx.event.sender.user_id)


def staff_target(event: Event) -> str | None:
    """The case a staff button or command is about, so the runner can load it."""
    if isinstance(event, ButtonPressed):
        match = REVIEW_DATA.match(event.data)
        return match.group(1) if match else None
    if isinstance(event, CommandReceived) and event.name in TARGETED_COMMANDS:
        first = next(iter(event.args.split(maxsplit=1)), "")
        return first if CASE_ID.match(first) else None
    return None


def denied(ctx: Context, what: str) -> Say:
    """What a non-admin gets: the unknown-command reply, and a line in the audit log."""
    sender = ctx.event.sender
    return Say(say=(text("engine.unknown_command"),),
               audit=(("admin.denied", f"user:{sender.user_id}", {"attempt": what}),))


def admin_only(name: str, action: Action) -> Action:
    async def guarded(ctx: Context) -> Outcome:
        return await action(ctx) if is_admin(ctx) else denied(ctx, f"/{name}")

    return guarded


# --- review decisions ---------------------------------------------------------------------------------------


async def review_button(ctx: Context) -> Outcome:
    """A press on a review card: approve, reject (with a reason), or ask for more documents."""
    assert isinstance(ctx.event, ButtonPressed)
    match = REVIEW_DATA.match(ctx.event.data)
    if not is_admin(ctx) or match is None:
        return Say(say=(text("engine.button_expired"),), audit=(("admin.denied", "review", {}),))
    case, action = ctx.target, match.group(3)
    if case is None or case.status != "review":
        return already_decided(case)
    if case.user_id == ctx.event.sender.user_id:
        return own_case(case)
    if int(match.group(2)) != case.data.get("review_round"):  # a card from an earlier submission
        return Say(say=(text("review.old_card", case=case.id),))
    if action == "approve":
        if not await evidence_shown(services(ctx), case, ctx.event.sender.chat_id):  # e.g. forged button data
            return Say(say=(text("review.evidence_first", case=case.id),))
        return await approve(ctx, case)
    if action == "more":
        return ask_for_more(ctx, case)
    if action == "reject":
        return pick_reason(ctx, case)
    if action.startswith("rj_") and action[3:] in REASONS:
        return reject(ctx, case, text(f"review.reason_{action[3:]}"))
    if action == "rj_type":
        return Say(say=(text("review.type_reason", case=case.id),))
    return Say(say=(text("engine.button_expired"),))


def own_case(case: Case) -> Say:
    """Nobody decides their own recovery: a member of staff who lost their factors is reviewed by another."""
    return Say(say=(text("review.own_case", case=case.id),), audit=(("admin.denied", f"case:{case.id}", {}),))


def already_decided(case: Case | None) -> Say:
    if case is None:
        return Say(say=(text("review.no_such_case"),))
    by = case.data.get("decided_by")
    if by is None:
        return Say(say=(text("review.not_waiting", case=case.id, state=text(f"desk.state_{case.status}")),))
    return Say(say=(text("review.already_decided", case=case.id, by=by, decision=case.data.get("decision", "")),))


def decision(ctx: Context, verdict: str, told: Text) -> dict[str, Any]:
    """The decision as the case keeps it, with what it told the user (said again if they were away)."""
    return {"decision": verdict, "decided_by": ctx.event.sender.user_id, "decided_at": ctx.now.timestamp(),
            "decision_told": text_to_json(told)}


def purge_later(ctx: Context) -> TimerSpec:
    return TimerSpec("purge_documents", ctx.now + services(ctx).settings.document_retention, detached=True)


async def approve(ctx: Context, case: Case) -> Outcome:
    """Carry out what the user asked to restore, lock withdrawals, tell the user and the address on file.

    The authenticator is reset (and a new one set up) only when it was asked for, or when the phone was and the
    account signs in with it; a phone asked for is removed from the account; an email change is left to the
    service's staff, who are told so.
    """
    svc = services(ctx)
    account_id = int(case.data["account_id"])
    account = await svc.directory.get(account_id)
    assert account is not None
    asked = [item for item in RESTORABLE if item in case.data.get("restore", [])]
    reenrol = "totp" in asked or ("phone" in asked and account.two_factor == "phone")
    lock, until = await withdrawal_lock(ctx, account_id)
    changes = [Change(RESET_TWO_FACTOR)] if reenrol else []
    changes += [Change(REMOVE_PHONE)] if "phone" in asked else []
    stamp = moment(until, ctx.language)
    said = text("review.approved_user", hours=lock_hours(ctx)["hours"], until=stamp,
                changes=tuple(text(f"review.changed_{item}") for item in asked))
    said_now = await change_account(ctx, case, account_id, (*changes, lock), then=(said,))
    data: dict[str, Any] = decision(ctx, "approved", said)
    letters: tuple[Letter, ...] = ()
    if reenrol:
        fresh, letters = await new_authenticator(ctx, case.chat_id, account.email)
        data.update(fresh)
    outcome = Goto(
        ENROL if reenrol else RESTORED, say=said_now, data=data,
        timers=(TimerSpec("withdrawals_unlocked", until, detached=True), purge_later(ctx)),
        notify=owner_email(svc, account, "review.reset_email", until=stamp), letters=letters,
    )
    detail = {"account_id": account_id, "restore": asked, "withdrawals_locked_until": until.isoformat()}
    tell = text("review.approved_staff", case=case.id, changes=tuple(text(f"review.staff_{item}") for item in asked))
    return OnCase(outcome, tell=(tell,), audit=(("review.approved", f"case:{case.id}", detail),))


def pick_reason(ctx: Context, case: Case) -> Say:
    prefix = f"r:{case.id}:{case.data.get('review_round', 0)}"
    rows = tuple(((f"review.reason_{r}", f"{prefix}:rj_{r}"),) for r in REASONS)
    rows += ((("review.reason_type_button", f"{prefix}:rj_type"),),)
    return Say(letters=(Letter((ctx.event.sender.chat_id,), text("review.pick_reason", case=case.id), rows),))


def reject(ctx: Context, case: Case, reason: Text) -> OnCase:
    said = text("review.rejected_user", reason=reason)
    outcome = Close("rejected", say=(said,), data=decision(ctx, "rejected", said), timers=(purge_later(ctx),))
    return OnCase(outcome, tell=(text("review.rejected_staff", case=case.id),),
                  audit=(("review.rejected", f"case:{case.id}", {"reason": reason.key}),))


def ask_for_more(ctx: Context, case: Case) -> OnCase:
    said = text("review.more_user")
    outcome = Goto(MORE_DOCUMENTS, say=(said,), data=decision(ctx, "more", said))
    return OnCase(outcome, tell=(text("review.more_staff", case=case.id),),
                  audit=(("review.more_requested", f"case:{case.id}", {}),))


async def reject_command(ctx: Context) -> Outcome:
    """/reject CASE_ID reason typed by staff."""
    assert isinstance(ctx.event, CommandReceived)
    parts = ctx.event.args.split(maxsplit=1)
    case = ctx.target
    if case is None or len(parts) < 2:
        return Say(say=(text("review.reject_usage"),))
    if case.status != "review":
        return already_decided(case)
    if case.user_id == ctx.event.sender.user_id:
        return own_case(case)
    typed = parts[1].strip()[:500]
    outcome = reject(ctx, case, Text("review.typed_reason", {"reason": typed}))
    return OnCase(outcome.outcome, tell=outcome.tell,
                  audit=(("review.rejected", f"case:{case.id}", {"reason": typed}),))


async def purge_documents(ctx: Context) -> Outcome:
    """Forget the references to the identity documents and delete the staff messages that showed them."""
    case = ctx.target
    if case is None or not any(isinstance(case.data.get(slot), dict) for slot in PHOTO_SLOTS):
        return Say()
    await services(ctx).tx.evidence.forget(case.id, ctx.now)
    forget = {slot: None for slot in PHOTO_SLOTS if slot in case.data}
    return OnCase(Stay(data=forget, show_prompt=False), audit=(("documents.purged", f"case:{case.id}", {}),))


async def purge_undecided(ctx: Context) -> Outcome:
    """A case closed without a review decision keeps no documents; a decided one keeps them for
    DOCUMENT_RETENTION_DAYS (its purge timer was set with the decision)."""
    case = ctx.target
    if case is None or case.data.get("decision") in DECIDED:
        return Say()
    return await purge_documents(ctx)


# --- admin commands -----------------------------------------------------------------------------------------


async def queue_command(ctx: Context) -> Outcome:
    waiting = await pending_reviews(services(ctx))
    if not waiting:
        return Say(say=(text("staff.queue_empty"),))
    lines = tuple(text("staff.queue_line", case=c.id, age=age(ctx.now, c.updated_at, ctx.language))
                  for c in waiting)
    return Say(say=(text("staff.queue", count=len(waiting), lines=lines),))


async def case_command(ctx: Context) -> Outcome:
    case = ctx.target
    if case is None:
        return Say(say=(text("review.no_such_case"),))
    card = await review_card(services(ctx), case, (ctx.event.sender.chat_id,), ctx.now)
    changes = await case_changes(ctx, case)
    if case.status != "review":
        card = replace(card, buttons=())
        return Say(say=(text("review.not_waiting", case=case.id, state=text(f"desk.state_{case.status}")),
                        *changes), letters=(card,))
    return Say(say=changes, letters=(card,))


async def case_changes(ctx: Context, case: Case) -> tuple[Text, ...]:
    """The case's changes sent to an HTTP directory, each with where it stands."""
    queued = await services(ctx).tx.directory_changes.of_case(case.id)
    if not queued:
        return ()
    items = tuple(text("directory.case_change", change=row.queued.change.get("kind", "?"),
                       status=row.status if row.error is None else f"{row.status} ({row.error})") for row in queued)
    return (text("directory.case_changes", changes=items),)


async def audit_command(ctx: Context) -> Outcome:
    rows = await recent_audit(services(ctx))
    if not rows:
        return Say(say=(text("staff.audit_empty"),))
    lines = tuple(text("staff.audit_line", at=f"{row.at:%m-%d %H:%M}", actor=row.actor, action=row.action,
                       subject=row.subject) for row in rows)
    return Say(say=(text("staff.audit", lines=lines),))


async def directory_lines(ctx: Context) -> tuple[Text, ...]:
    """With an HTTP directory: whether it answers, and the changes waiting for it or refused by it."""
    svc = services(ctx)
    health = svc.directory_health
    if health is None:
        return ()
    tally = await svc.tx.directory_changes.tally()
    state = (text("directory.stats_down", reason=health.last_reason or "", failures=health.failures_since(3600))
             if health.down else text("directory.stats_ok"))
    return (text("directory.stats", state=state, pending=tally["pending"], failed=tally["failed"]),)


async def stats_command(ctx: Context) -> Outcome:
    """The numbers as text, and as a funnel chart where the optional `charts` extra is installed."""
    stats = await collect(services(ctx).tx.statistics, ctx.now)
    lines = tuple(Text(key, params) for key, params in stats_lines(stats)) + await directory_lines(ctx)
    report = Say(say=(Text("stats.report", {"lines": lines}),))
    chart = await asyncio.to_thread(funnel_chart, stats)
    if chart is None:
        return report
    picture = Letter((ctx.event.sender.chat_id,), text("stats.chart_caption"),
                     png_base64=base64.b64encode(chart).decode())
    return Say(say=report.say, letters=(picture,))


def staff_commands(extra: Mapping[str, Action] | None = None) -> dict[str, Action]:
    """The admin commands, each refused to anyone not in ADMIN_IDS."""
    commands: dict[str, Action] = {
        "queue": queue_command, "case": case_command, "reject": reject_command, "audit": audit_command,
        "stats": stats_command,
        **(extra or {}),
    }
    return {name: admin_only(name, action) for name, action in commands.items()}


STAFF_TIMERS: Mapping[str, Action] = {"purge_documents": purge_documents}
