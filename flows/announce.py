"""Staff announcements: /broadcast with a preview and an audience, [Send] / [Cancel], and /broadcast_cancel.

The draft is written in the command's own transaction; sending is a post-commit effect handed to the
BroadcastService, which paces it, survives restarts and reports progress in the preview message.
"""

from __future__ import annotations

import html
import logging
import re
from collections.abc import Mapping
from typing import Any

from flows.broadcast import (
    BroadcastBusy,
    BroadcastService,
    count_audience,
    create_draft,
    running_progress,
    set_draft_audience,
)
from flows.events import ButtonPressed, CommandReceived
from flows.methods.common import services
from flows.model import Context, Effect, Letter, Outcome, Say
from flows.records import DRAFT
from flows.runner import EffectHandler
from flows.texts import Html, Text, count, text

log = logging.getLogger(__name__)

BROADCAST_DATA = re.compile(r"^b:(\d{1,12}):(send|cancel|all|open)$")
AUDIENCE_PREFIX = re.compile(r"^@(open|lang:[A-Za-z-]{2,12})\s*")


def _audience(args: str) -> tuple[str, str | None, str]:
    """("all" | "open" | "language", language, the rest of the text) from `/broadcast [@open|@lang:xx] TEXT`."""
    match = AUDIENCE_PREFIX.match(args)
    if match is None:
        return "all", None, args
    choice, rest = match.group(1), args[match.end():]
    return ("open", None, rest) if choice == "open" else ("language", choice.split(":", 1)[1].lower(), rest)


async def broadcast_command(ctx: Context) -> Outcome:
    """/broadcast TEXT, or /broadcast sent as a reply to the message to copy: a draft and its preview."""
    event = ctx.event
    assert isinstance(event, CommandReceived)
    audience, language, body = _audience(event.args.strip())
    if not body.strip() and event.reply_to is None:
        return Say(say=(text("broadcast.usage"),))
    copy_from = (event.sender.chat_id, event.reply_to) if event.reply_to is not None and not body.strip() else None
    try:
        draft = await create_draft(services(ctx).tx.broadcasts, ctx.now, event.sender.user_id, audience,
                                   text=None if copy_from else _as_html(event, body), copy_from=copy_from,
                                   language=language)
    except ValueError:
        return Say(say=(text("broadcast.usage"),))
    return Say(letters=(await preview(ctx, draft),),
               audit=(("broadcast.drafted", f"broadcast:{draft}", {"audience": audience, "language": language}),))


def _as_html(event: CommandReceived, body: str) -> str:
    """The text to broadcast as HTML: the admin's own formatting kept where the platform gives it, else the
    plain text escaped ("Fees < 1%" must reach every recipient as written)."""
    if event.args_html is not None:
        audience, language, formatted = _audience(event.args_html)
        if (audience, language) == _audience(event.args.strip())[:2] and formatted.strip():
            return formatted.strip()
    return html.escape(body.strip(), quote=False)


async def preview(ctx: Context, draft: int) -> Letter:
    broadcasts = services(ctx).tx.broadcasts
    view = await broadcasts.get(draft)
    assert view is not None
    size = await count_audience(broadcasts, view.audience, view.language)
    shown: Text = text("broadcast.preview_copy") if view.text is None else Text("broadcast.preview_text",
                                                                                 {"body": Html(view.text)})
    summary = text("broadcast.preview", id=draft, body=shown, size=count("people", size),
                   audience=text(f"broadcast.audience_{view.audience}", language=view.language or ""))
    rows = ((("broadcast.btn_send", f"b:{draft}:send"), ("broadcast.btn_cancel", f"b:{draft}:cancel")),
            (("broadcast.btn_all", f"b:{draft}:all"), ("broadcast.btn_open", f"b:{draft}:open")))
    return Letter((ctx.event.sender.chat_id,), summary, rows)


async def broadcast_button(ctx: Context) -> Outcome:
    """[Send], [Cancel] or an audience on a preview; only admins, only while it is a draft."""
    event = ctx.event
    assert isinstance(event, ButtonPressed)
    match = BROADCAST_DATA.match(event.data)
    if match is None or not services(ctx).settings.is_admin(event.sender.user_id):
        return Say(say=(text("engine.button_expired"),), audit=(("admin.denied", "broadcast", {}),))
    draft, action = int(match.group(1)), match.group(2)
    broadcasts = services(ctx).tx.broadcasts
    view = await broadcasts.get(draft)
    if view is None or view.status != DRAFT:
        return Say(say=(text("broadcast.not_a_draft", id=draft),))
    subject = f"broadcast:{draft}"
    if action in ("all", "open"):
        await set_draft_audience(broadcasts, draft, action, None)
        return Say(letters=(await preview(ctx, draft),), audit=(("broadcast.audience", subject, {"to": action}),))
    if action == "cancel":
        await broadcasts.cancel(draft, ctx.now)
        return Say(say=(text("broadcast.dropped", id=draft),), audit=(("broadcast.dropped", subject, {}),))
    running = await broadcasts.running()
    if running:  # nothing starts; the admin hears why (a start racing this one is told by the service)
        progress = await running_progress(broadcasts, running[0])
        return Say(say=(text("broadcast.busy", id=draft, running=progress.broadcast_id, percent=progress.percent,
                             done=progress.done, total=progress.total),),
                   audit=(("broadcast.refused", subject, {"running": running[0]}),))
    start = Effect("broadcast.start", {"id": draft, "chat_id": event.sender.chat_id, "message_id": event.message_id})
    return Say(say=(text("broadcast.starting", id=draft),), effects=(start,),
               audit=(("broadcast.started", subject, {}),))


async def broadcast_cancel_command(ctx: Context) -> Outcome:
    ids = await services(ctx).tx.broadcasts.running()
    if not ids:
        return Say(say=(text("broadcast.none_running"),))
    return Say(say=(text("broadcast.cancelling", id=ids[0]),), effects=(Effect("broadcast.cancel", {"id": ids[0]}),),
               audit=(("broadcast.cancelled", f"broadcast:{ids[0]}", {}),))


def broadcast_effects(service: BroadcastService) -> Mapping[str, EffectHandler]:
    """What the runner does after the commit: start or cancel a broadcast."""

    async def start(params: Mapping[str, Any]) -> None:
        try:
            await service.start(int(params["id"]), int(params["chat_id"]), int(params["message_id"] or 0))
        except BroadcastBusy:  # the admin was told through the outbox; the draft stays a draft
            log.info("broadcast %s not started: another one is running", params["id"])

    async def cancel(params: Mapping[str, Any]) -> None:
        await service.cancel(int(params["id"]))

    return {"broadcast.start": start, "broadcast.cancel": cancel}
