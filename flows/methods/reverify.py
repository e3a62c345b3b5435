"""Method 2 — Security Check Not Available (full re-verification).

For someone who has neither the authenticator nor the phone: choose what to restore, prove the phone and email
on file with codes, answer the security question, show an identity document and a selfie, and wait for staff to
review. Withdrawals stay locked for a while after a successful reset.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from flows import countries
from flows.methods.common import (
    ask_email_step,
    check_code,
    code_timers,
    count_wrong,
    failed_check,
    lock_hours,
    on_code_timers,
    send_codes,
    services,
)
from flows.methods.enrol import ENROL_STEPS
from flows.model import Accepts, Choice, Context, Flow, Goto, Outcome, Stay, Step, TimerSpec, exits_of, leads_to
from flows.review import PHOTO_SLOTS, review_card
from flows.services import staff_chats
from flows.texts import Text, count, plain_text, text, translate

RESTORABLE = ("totp", "phone", "email")
MAX_WRONG_ANSWERS = 3
ID_TYPES = ("passport", "national_id", "driving_licence")


@leads_to("restore", "ask_email")
async def start(ctx: Context) -> Outcome:
    return Goto("restore" if "email" in ctx.data else "ask_email")


def _toggle(item: str) -> Choice:
    async def flip(ctx: Context) -> Outcome:
        chosen = set(ctx.data.get("restore", []))
        chosen.symmetric_difference_update({item})
        return Stay(data={"restore": sorted(chosen)})

    def mark(ctx: Context) -> dict[str, object]:
        return {"mark": "☑" if item in ctx.data.get("restore", []) else "☐"}

    return Choice(f"toggle_{item}", f"reverify.restore_{item}", run=flip, label_params=mark)


@leads_to("get_codes", "send")
async def confirm_restore(ctx: Context) -> Outcome:
    if not ctx.data.get("restore"):
        return Stay(say=(text("reverify.pick_one"),))
    return Goto("send" if ctx.data.get("codes_passed") else "get_codes")


@leads_to("phone_code")
async def get_codes(ctx: Context) -> Outcome:
    sending = await send_codes(ctx, ("phone", "email"))
    if not sending.sent:
        return Stay(say=sending.say)
    return Goto("phone_code", say=sending.say, data=sending.data, notify=sending.notify,
                timers=code_timers(ctx))


def _take_code(factor: str, next_step: str) -> Any:
    @leads_to(next_step, "codes_locked")
    async def take(ctx: Context) -> Outcome:
        check = await check_code(ctx, factor)
        if check.status == "ok":
            return Goto(next_step, data={f"{factor}_verified": True})
        if check.status == "wrong":
            wrong = text(f"reverify.wrong_{factor}", tries=count("tries", check.tries_left))
            return Stay(say=(wrong,), notify=check.notify, audit=check.audit)
        if check.status == "locked":
            return Goto("codes_locked", notify=check.notify, audit=check.audit)
        return Stay(say=(text(f"codes.{check.status}"),))

    return take


@leads_to("email_code")
async def skip_phone(ctx: Context) -> Outcome:
    return Goto("email_code", say=(text("reverify.phone_skipped"),), data={"phone_skipped": True})


@leads_to("question", "documents", "codes_locked", "restore")
async def send(ctx: Context) -> Outcome:
    account_id = ctx.data.get("account_id")
    account = await services(ctx).directory.get(int(account_id)) if account_id is not None else None
    if account is None:  # cannot happen: an unknown email never passes the email code
        return Goto("codes_locked")
    offered = {"totp": account.has_totp or account.two_factor == "totp", "phone": account.phone is not None,
               "email": True}
    restore = [item for item in ctx.data.get("restore", []) if offered[item]]
    dropped = [item for item in ctx.data.get("restore", []) if not offered[item]]
    data = {"question": account.security_question, "verified": account.identity_verified, "restore": restore}
    said = tuple(text(f"reverify.not_on_account_{item}") for item in dropped)
    if not restore:  # nothing chosen is on the account: choose again (the codes stay proven)
        return Goto("restore", say=(*said, text("reverify.choose_again")), data={**data, "codes_passed": True})
    return Goto("question" if account.security_question else "documents", say=said, data=data)


@leads_to("documents", "answer_locked")
async def take_answer(ctx: Context) -> Outcome:
    svc = services(ctx)
    account_id = int(ctx.data["account_id"])
    paused = await svc.failures.paused(account_id)
    if await svc.directory.verify_security_answer(account_id, ctx.text) and not paused:
        return Goto("documents", data={"answer_verified": True})
    notify, audit = await failed_check(ctx, "answer")
    data, left = count_wrong(ctx, "answer_wrong", MAX_WRONG_ANSWERS)
    if left == 0:
        return Goto("answer_locked", data=data, notify=notify, audit=audit)
    return Stay(say=(text("reverify.wrong_answer", tries=count("tries", left)),), data=data, notify=notify, audit=audit)


@leads_to("country", "selfie")
async def documents_next(ctx: Context) -> Outcome:
    """Start the documents afresh: after "Ask for more", a photo of an earlier round (say the back of an ID card
    when a passport follows) must not reach staff beside the new ones."""
    earlier = {slot: None for slot in PHOTO_SLOTS if ctx.data.get(slot) is not None}
    return Goto("selfie" if ctx.data.get("verified") else "country", data=earlier)


def _country_choice(code: str) -> Choice:
    @leads_to("id_type")
    async def pick(ctx: Context) -> Outcome:
        return Goto("id_type", data={"country": code})

    return Choice(f"c_{code.lower()}", "reverify.country_label", run=pick,
                  label_params=lambda ctx: {"name": countries.name_of(code, ctx.language)})


@leads_to("id_type")
async def search_country(ctx: Context) -> Outcome:
    found = countries.search(ctx.text, ctx.language)
    if len(found) == 1:  # said back, so that a typo that matched another country is seen
        matched = text("reverify.country_matched", name=countries.name_of(found[0], ctx.language))
        return Goto("id_type", say=(matched,), data={"country": found[0]})
    if not found:
        return Stay(say=(text("reverify.no_country"),))
    names = ", ".join(countries.name_of(code, ctx.language) for code in found[:8])
    return Stay(say=(text("reverify.many_countries", names=names),))


def _id_choice(kind: str) -> Choice:
    @leads_to("front")
    async def pick(ctx: Context) -> Outcome:
        return Goto("front", data={"id_type": kind})

    return Choice(kind, f"reverify.id_{kind}", run=pick)


def _take_photo(slot: str, next_step: Any) -> Any:
    """Take the photo for `slot` and go on to `next_step`: a step, or a function of the case that picks one of
    the steps it `leads_to`."""

    @leads_to(*(exits_of(next_step) if callable(next_step) else (next_step,)), "review")
    async def take(ctx: Context) -> Outcome:
        problem = _photo_problem(ctx)
        if problem is not None:
            return Stay(say=(problem,))
        file = ctx.file
        assert file is not None
        stored = {"file_id": file.file_id, "unique_id": file.unique_id, "kind": file.kind,
                  "size": file.size, "mime_type": file.mime_type}
        if ctx.data.get("retaking"):  # one photo taken again from the summary: back to it
            return Goto("review", data={f"photo_{slot}": stored, "retaking": False})
        target = next_step(ctx) if callable(next_step) else next_step
        return Goto(target, data={f"photo_{slot}": stored})

    return take


def _photo_problem(ctx: Context) -> Text | None:
    file = ctx.file
    if file is None:
        return text("reverify.photo_only")
    if file.kind == "document" and not (file.mime_type or "").startswith("image/"):
        return text("reverify.photo_only")
    limit = services(ctx).settings.max_file_bytes
    if file.size is not None and file.size > limit:
        return text("reverify.photo_too_big", megabytes=limit // (1024 * 1024))
    return None


@leads_to("submitted")
async def submit_for_review(ctx: Context) -> Outcome:
    """Into the review queue: a card to the staff, and a reminder to them if it waits too long."""
    svc = services(ctx)
    overdue = TimerSpec("review_sla", ctx.now + svc.settings.review_sla, detached=True)
    assert ctx.case is not None
    review_round = int(ctx.data.get("review_round", 0)) + 1
    submitted = replace(ctx.case, data={**ctx.case.data, "review_round": review_round})
    card = await review_card(svc, submitted, staff_chats(svc.settings), ctx.now)
    return Goto("submitted", data={"review_round": review_round},
                timers=(replace(overdue, payload={"round": review_round}),), letters=(card,),
                audit=(("case.submitted", f"case:{ctx.case.id}", {"round": review_round}),))


PHOTO_STEPS = ("front", "back", "selfie")


def _retake(slot: str) -> Choice:
    """A button on the summary: take this photo again, then come back to the summary."""

    @leads_to(slot)
    async def retake(ctx: Context) -> Outcome:
        return Goto(slot, data={"retaking": True})

    return Choice(f"retake_{slot}", f"reverify.btn_retake_{slot}", run=retake,
                  shown=lambda ctx: isinstance(ctx.data.get(f"photo_{slot}"), dict))


def summary(ctx: Context) -> dict[str, object]:
    """What the staff will be sent, in the user's words, for the summary before Submit."""
    data = ctx.data
    lines = [text("reverify.summary_restore",
                  items=", ".join(plain_text(translate(text(f"reverify.restore_{item}", mark=""), ctx.language)).strip()
                                  for item in RESTORABLE if item in data.get("restore", [])))]
    if data.get("country"):
        lines.append(text("reverify.summary_document", country=countries.name_of(str(data["country"]), ctx.language),
                          kind=text(f"reverify.id_{data.get('id_type', 'passport')}")))
    photos = sum(1 for slot in PHOTO_STEPS if isinstance(data.get(f"photo_{slot}"), dict))
    lines.append(text("reverify.summary_photos", photos=count("photos", photos)))
    return {"summary": tuple(lines)}


@leads_to("back", "selfie")
def _after_front(ctx: Context) -> str:
    return "selfie" if ctx.data.get("id_type") == "passport" else "back"


REVERIFY = Flow(
    id="reverify",
    title="menu.reverify",
    start="warn",
    stages=(("stage.account_and_restore", ("warn", "ask_email", "restore")),
            ("stage.codes", ("get_codes", "phone_code", "email_code", "send", "codes_locked")),
            ("stage.question", ("question", "answer", "answer_locked")),
            ("stage.documents", ("documents", "country", "id_type", "front", "back", "selfie")),
            ("stage.check_and_send", ("review",)),
            ("stage.staff_review", ("submitted",)),
            ("stage.new_authenticator", ("enrol", "enrolled", "enrol_applying", "enrol_failed", "restored"))),
    steps=(
        Step("warn", prompt="reverify.warn", prompt_params=lock_hours,
             choices=(Choice("continue", "reverify.btn_continue", run=start),)),
        ask_email_step("restore"),
        Step("restore", prompt="reverify.restore", columns=1,
             choices=(*(_toggle(item) for item in RESTORABLE),
                      Choice("confirm", "reverify.btn_confirm_restore", run=confirm_restore))),
        Step("get_codes", prompt="reverify.get_codes",
             choices=(Choice("get_code", "phone.btn_get_code", run=get_codes),)),
        Step("phone_code", prompt="reverify.phone_code", accepts=Accepts.TEXT, expects="code",
             on_input=_take_code("phone", "email_code"), code_factor="phone",
             on_timer=on_code_timers("phone"),
             choices=(Choice("resend", "codes.btn_new_codes", run=get_codes),
                      Choice("no_sms", "reverify.btn_no_sms", run=skip_phone))),
        Step("email_code", prompt="reverify.email_code", accepts=Accepts.TEXT, expects="code",
             on_input=_take_code("email", "send"), code_factor="email",
             on_timer=on_code_timers("phone"),
             choices=(Choice("resend", "codes.btn_new_codes", run=get_codes),)),
        Step("send", prompt="reverify.send",
             choices=(Choice("send", "reverify.btn_send", run=send),)),
        Step("question", prompt="reverify.question",
             choices=(Choice("start", "reverify.btn_start_questions", to="answer"),)),
        Step("answer", prompt="reverify.answer", accepts=Accepts.TEXT, on_input=take_answer, expects="answer",
             prompt_params=lambda ctx: {"question": ctx.data.get("question") or ""}),
        Step("documents", prompt="reverify.documents",
             choices=(Choice("next", "reverify.btn_next", run=documents_next),)),
        Step("country", prompt="reverify.country", accepts=Accepts.TEXT, on_input=search_country, expects="country",
             columns=2, choices=tuple(_country_choice(c) for c in countries.COMMON)),
        Step("id_type", prompt="reverify.id_type", choices=tuple(_id_choice(kind) for kind in ID_TYPES)),
        Step("front", prompt="reverify.front", accepts=Accepts.FILE,
             on_input=_take_photo("front", _after_front)),
        Step("back", prompt="reverify.back", accepts=Accepts.FILE, on_input=_take_photo("back", "selfie")),
        Step("selfie", prompt="reverify.selfie", accepts=Accepts.FILE, on_input=_take_photo("selfie", "review")),
        Step("review", prompt="reverify.review", prompt_params=summary,
             choices=(Choice("submit", "reverify.btn_submit_review", run=submit_for_review),
                      *(_retake(slot) for slot in PHOTO_STEPS))),
        Step("submitted", prompt="reverify.submitted", final="review"),
        *ENROL_STEPS,
        Step("restored", prompt="reverify.restored", final="approved"),
        Step("codes_locked", prompt="reverify.codes_locked", final="failed"),
        Step("answer_locked", prompt="reverify.answer_locked", final="failed"),
    ),
    entries=("enrol", "restored", "documents"),  # where staff decisions send a case (flows.staff)
)
