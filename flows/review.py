"""What staff see of a case waiting for review: the card, the queue and the audit log."""

from __future__ import annotations

from datetime import datetime

from flows import countries
from flows.durations import Span
from flows.model import Attachment, Letter
from flows.records import AuditRecord, Case
from flows.services import Services
from flows.texts import Text, text

PHOTO_SLOTS = ("photo_front", "photo_back", "photo_selfie")
DECISIONS = ("approve", "reject", "more")


def review_buttons(case_id: str, review_round: int) -> tuple[tuple[tuple[str, str], ...], ...]:
    """Approve / Reject / Ask for more, bound to this submission of the case (older cards expire)."""
    return tuple(((f"review.btn_{action}", f"r:{case_id}:{review_round}:{action}"),) for action in DECISIONS)


async def review_card(svc: Services, case: Case, chat_ids: tuple[int, ...], now: datetime) -> Letter:
    """The review card: account, restore items, checks passed, document, the evidence, and the decision buttons."""
    account_id = case.data.get("account_id")
    account = await svc.directory.get(int(account_id)) if account_id is not None else None
    data = case.data
    checks = [text(f"review.check_{name}") for name in ("phone_verified", "email_verified", "answer_verified")
              if data.get(name)]
    if data.get("phone_skipped"):
        checks.append(text("review.check_phone_skipped"))
    restore = tuple(text(f"review.restore_{item}") for item in data.get("restore", []))
    country = data.get("country")
    card = text(
        "review.card", case=case.id, email=account.email if account else "?", age=waited(now, case.updated_at),
        restore=_joined(restore), checks=_joined(tuple(checks)),
        country=countries.name_of(str(country)) if country else "—",
        id_type=text(f"reverify.id_{data['id_type']}") if data.get("id_type") else "—",
    )
    return Letter(chat_ids, card, review_buttons(case.id, int(data.get("review_round", 0))), files=evidence(case),
                  files_of=case.id, if_files_fail=text("review.evidence_failed", case=case.id))


def evidence(case: Case) -> tuple[Attachment, ...]:
    """The identity document and selfie the case still holds, each as the kind of file it arrived as."""
    held = (case.data[slot] for slot in PHOTO_SLOTS if isinstance(case.data.get(slot), dict))
    return tuple(Attachment(str(file["file_id"]), str(file.get("kind") or "photo")) for file in held)


def _joined(items: tuple[Text, ...]) -> tuple[Text, ...] | Text:
    return items if items else text("review.none")


def age(now: datetime, then: datetime | None, language: str | None = "en") -> str:
    """How long ago `then` was, e.g. '4h 5m'."""
    return waited(now, then).in_language(language)


def waited(now: datetime, then: datetime | None) -> Span:
    """How long ago `then` was, written in each reader's language."""
    return Span(now - then if then is not None else None)


async def pending_reviews(svc: Services, limit: int = 30) -> list[Case]:
    """Cases waiting for review, oldest first."""
    return await svc.tx.cases.in_review(limit)


async def recent_audit(svc: Services, limit: int = 20) -> list[AuditRecord]:
    """The latest audit lines, newest first."""
    return await svc.tx.audit.recent(limit)


async def evidence_shown(svc: Services, case: Case, chat_id: int) -> bool:
    """Whether this submission's identity evidence reached `chat_id` (recorded as it is delivered), so a decision
    made there was made with it in view (while in review, `updated_at` is the time of the submission)."""
    return await svc.tx.evidence.shown(case.id, chat_id, case.updated_at)
