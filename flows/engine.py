"""The decision function: given an event and the chat's open case, say what changes and what to reply.

The engine does no I/O of its own; actions may use `ctx.services`, which the runner binds to the event's
database transaction. The runner (flows.runner) owns loading, saving and delivery.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from flows import metrics
from flows.events import (
    ButtonPressed,
    ChatReturned,
    CommandReceived,
    Event,
    FileReceived,
    TextReceived,
    TimerFired,
)
from flows.model import (
    ANY_STEP,
    BACK,
    Accepts,
    Action,
    AuditLine,
    Begin,
    Choice,
    Close,
    Context,
    Flow,
    Goto,
    Letter,
    Notice,
    OnCase,
    Outcome,
    Say,
    Stay,
    Step,
    TimerSpec,
    check_links,
    exits_of,
    qualify,
)
from flows.records import ACTIVE, DELETE_MESSAGE, AuditEntry, Case, Decision, NewTimer
from flows.render import Renderer, Translator, merge_messages
from flows.replies import (
    AnswerButton,
    Button,
    DeleteMessage,
    EditMessage,
    Notify,
    Reply,
    SendMessage,
)
from flows.texts import Text, plain_text, translate

IDLE_REMINDER = "idle_reminder"
CASE_TIMEOUT = "case_timeout"
RESUME = "resume"
Guard = Callable[[str, str | None], str | None]
BUTTON_DATA = re.compile(r"^([A-Za-z0-9_-]{12}):(\d{1,9}):([a-z][a-z0-9_]{0,23})$")


class FlowError(RuntimeError):
    """A flow broke its own declaration (e.g. went to a step it does not list as an exit)."""


async def _show_again(ctx: Context) -> Outcome:
    return Stay()


RESUME_CHOICE = Choice(RESUME, "engine.btn_continue", run=_show_again)


def new_case_id() -> str:
    """A random, unguessable 12-character case id (72 bits), safe in button data."""
    return secrets.token_urlsafe(9)


class Engine:
    """Runs flows: `decide(event, case, services, now)` → `Decision`."""

    def __init__(
        self,
        flows: Mapping[str, Flow],
        commands: Mapping[str, Action],
        text_defaults: Mapping[str, object] | None = None,
        translator: Translator = translate,
        guard: Guard | None = None,
        timer_handlers: Mapping[str, Action] | None = None,
        button_routes: Mapping[str, Action] | None = None,
        targets: Callable[[Event], str | None] | None = None,
        idle_after: timedelta | None = None,
        abandon_after: timedelta | None = None,
        on_close: Action | None = None,
        on_return: Action | None = None,
    ) -> None:
        """`on_close` runs, in the same event, for every case the event closes (that case is `ctx.target`); an
        `OnCase` it returns is applied to that case on behalf of "system". `on_return` answers a user who
        unblocked the bot (`ChatReturned`)."""
        self.flows = {flow.id: flow for flow in check_links(flows.values())}
        self.commands = dict(commands)
        self.renderer = Renderer(translator, text_defaults or {})
        self.guard = guard
        self.timer_handlers = dict(timer_handlers or {})
        self.button_routes = dict(button_routes or {})
        self.targets = targets
        self.idle_after = idle_after
        self.abandon_after = abandon_after
        self.on_close = on_close
        self.on_return = on_return

    def target_of(self, event: Event) -> str | None:
        """The id of the case an event is about when that is not the chat's own: a detached timer's case, or
        whatever the `targets` hook names (staff buttons and commands)."""
        if isinstance(event, TimerFired) and event.payload.get("step") is None:
            return event.case_id
        return self.targets(event) if self.targets is not None else None

    def step_of(self, case: Case) -> Step:
        return self.flows[case.flow].step(case.step)

    async def decide(
        self, event: Event, case: Case | None, services: Any, now: datetime, target: Case | None = None,
        languages: Mapping[int, str] | None = None,
    ) -> Decision:
        """Apply one event to the chat's active case (or None) and return what changes.

        `target` is the case a staff action or a detached timer is about (see `target_of`), whatever its status.
        `languages` holds the language each user is written to in (chosen with /language, else their app's), by
        user id: the event's sender, the user of a case staff decide, and the staff.
        """
        case = replace(case, data=dict(case.data)) if case is not None and case.active else None
        if target is not None:
            target = case if case is not None and case.id == target.id else replace(target, data=dict(target.data))
        languages = languages or {}
        language = languages.get(event.sender.user_id) or getattr(event.sender, "language", None)
        ctx = Context(event=event, now=now, case=case, services=services, language=language, target=target)
        turn = _Turn(self, ctx, languages)
        if isinstance(event, CommandReceived):
            await turn.command(event)
        elif isinstance(event, ButtonPressed):
            await turn.button(event)
        elif isinstance(event, TimerFired):
            await turn.timer(event)
        elif isinstance(event, ChatReturned):
            await turn.returned()
        else:
            await turn.message(event)
        await turn.after_closing()
        if not isinstance(event, TimerFired):
            turn.watch_silence()
        turn.decision.replies = merge_messages(turn.decision.replies)  # texts sent back to back go as one
        return turn.decision

    def render(self, case: Case, language: str | None, ctx: Context) -> SendMessage:
        """The current step's prompt with its buttons, bound to the case and its turn."""
        return self.renderer.prompt(case, self.step_of(case), ctx, language)

    def say(self, message: Text, language: str | None) -> str:
        return self.renderer.say(message, language)


class _Turn:
    """The work of deciding one event, accumulating a Decision."""

    def __init__(self, engine: Engine, ctx: Context, languages: Mapping[int, str]) -> None:
        self.engine = engine
        self.ctx = ctx
        self.languages = languages
        self.case = ctx.case
        self.chat_id = ctx.event.sender.chat_id
        self.decision = Decision()
        self.pressed: ButtonPressed | None = None
        self.closed: list[Case] = []

    # --- events -------------------------------------------------------------------------------------------

    async def command(self, event: CommandReceived) -> None:
        action = self.engine.commands.get(event.name)
        if action is None:
            self.send(Text("engine.unknown_command"))
            return
        await self.apply(await action(self.ctx), allowed=None)

    async def message(self, event: TextReceived | FileReceived) -> None:
        if isinstance(event, TextReceived) and self.caught_secret(event):
            return
        case = self.case
        if case is None:
            self.send(Text("engine.no_case"))
            return
        if case.status != "open":
            self.send(Text("engine.case_waiting"))
            return
        step = self.engine.step_of(case)
        wanted = Accepts.TEXT if isinstance(event, TextReceived) else Accepts.FILE
        if step.accepts is not wanted or step.on_input is None:
            hint = "engine.use_buttons" if step.accepts is Accepts.NOTHING else f"engine.expects_{step.accepts.value}"
            await self.apply(Stay(say=(Text(hint),)), allowed=())
            return
        await self.apply(await step.on_input(self.ctx), allowed=step.exits)

    async def returned(self) -> None:
        if self.engine.on_return is not None:
            await self.apply(await self.engine.on_return(self.ctx), allowed=None)

    def caught_secret(self, event: TextReceived) -> bool:
        """Warn about (and delete) a message that looks like a secret nobody asked for."""
        guard = self.engine.guard
        if guard is None:
            return False
        step = self.engine.step_of(self.case) if self.case is not None and self.case.status == "open" else None
        expecting = step.expects if step is not None and step.accepts is Accepts.TEXT else None
        kind = guard(event.text, expecting)
        if kind is None:
            return False
        if event.message_id is not None:
            self.emit(DeleteMessage(self.chat_id, event.message_id))
        self.send(Text(f"guard.{kind}"))
        return True

    async def button(self, event: ButtonPressed) -> None:
        route = self.engine.button_routes.get(event.data.split(":", 1)[0])
        if route is not None:
            self.answer(event, None)
            await self.apply(await route(self.ctx), allowed=None)
            return
        choice = self._pressed_choice(event)
        if choice is None:
            self.answer(event, Text("engine.button_expired"))
            return
        self.answer(event, None)
        self.pressed = event
        self.ctx = replace(self.ctx, choice=choice)
        outcome = Goto(choice.to) if choice.to else await self._run(choice.run)
        await self.apply(outcome, allowed=choice.targets())

    async def timer(self, event: TimerFired) -> None:
        binding = event.payload.get("step")
        if binding is None and event.kind == DELETE_MESSAGE:
            self.emit(DeleteMessage(int(str(event.payload["chat_id"])), int(str(event.payload["message_id"]))))
            return
        if binding is None:
            handler = self.engine.timer_handlers.get(event.kind)
            if handler is not None:
                await self.apply(await handler(self.ctx), allowed=())
            return
        case = self.case
        if case is None or case.id != event.case_id or case.status != "open":
            return
        if binding == ANY_STEP:
            await self.case_timer(case, event.kind)
            return
        step = self.engine.step_of(case)
        action = step.on_timer.get(event.kind)
        if case.step in str(binding).split(",") and action is not None:
            await self.apply(await action(self.ctx), allowed=exits_of(action))

    def watch_silence(self) -> None:
        """After a user's event, (re)start the case's silence timers: a nudge, then closing it as abandoned."""
        case = self.case
        if case is None or case.status != "open":
            return
        delays = ((IDLE_REMINDER, self.engine.idle_after), (CASE_TIMEOUT, self.engine.abandon_after))
        specs = tuple(TimerSpec(kind, self.ctx.now + delay, any_step=True, replace=True)
                      for kind, delay in delays if delay is not None)
        self.add_timers(case, specs)

    async def case_timer(self, case: Case, kind: str) -> None:
        """The engine's own timers for any step: a nudge after a silence, and closing an abandoned case."""
        if kind == IDLE_REMINDER:
            label = self.engine.say(Text("engine.btn_continue"), self.ctx.language)
            button = Button(label, f"{case.id}:{case.turn}:{RESUME}")
            self.emit(SendMessage(case.chat_id, self.engine.say(Text("engine.idle_reminder"), self.ctx.language),
                                  ((button,),)))
        elif kind == CASE_TIMEOUT:
            self.finish(case, "abandoned")
            self.send(Text("engine.abandoned"))

    async def _run(self, action: Action | None) -> Outcome:
        if action is None:
            raise FlowError("a choice needs `to` or `run`")
        return await action(self.ctx)

    def _pressed_choice(self, event: ButtonPressed) -> Choice | None:
        match = BUTTON_DATA.match(event.data)
        case = self.case
        if match is None or case is None or case.status != "open":
            return None
        case_id, turn, choice_id = match.groups()
        if case_id != case.id or int(turn) != case.turn:
            return None
        if choice_id == RESUME:
            return RESUME_CHOICE
        step = self.engine.step_of(case)
        for choice in step.choices:
            if choice.id == choice_id and (choice.shown is None or choice.shown(self.ctx)):
                return choice
        return None

    # --- outcomes -----------------------------------------------------------------------------------------

    async def apply(self, outcome: Outcome, allowed: tuple[str, ...] | None) -> None:
        """Carry out an outcome; `allowed` lists the exits it may take (None: from outside the step — a command
        or a staff decision —, which may go only to a flow's declared entries)."""
        if isinstance(outcome, Say):
            self.say_to(outcome)
        elif isinstance(outcome, OnCase):
            await self.on_case(outcome)
        elif isinstance(outcome, Stay):
            self.stay(outcome)
        elif isinstance(outcome, Goto):
            self.goto(outcome, allowed)
        elif isinstance(outcome, Begin):
            self.begin(outcome)
        elif isinstance(outcome, Close):
            self.close(outcome)

    async def after_closing(self) -> None:
        """Run the engine's `on_close` hook for each case this event closed."""
        hook = self.engine.on_close
        while hook is not None and self.closed:
            mine = self.ctx
            self.ctx = replace(self.ctx, target=self.closed.pop(0))
            outcome = await hook(self.ctx)
            if isinstance(outcome, OnCase):
                await self.on_case(outcome, who="system")
            self.ctx = mine

    async def on_case(self, outcome: OnCase, who: str | None = None) -> None:
        """A staff decision: the outcome lands on the target case and its chat; the staff member is told."""
        target, actor = self.ctx.target, self.ctx.event.sender
        if target is None:
            raise FlowError("a staff decision needs a target case")
        mine = (self.case, self.chat_id, self.pressed, self.ctx)
        self.case, self.chat_id, self.pressed = target, target.chat_id, None
        self.ctx = replace(self.ctx, case=target, language=self.languages.get(target.user_id))
        await self.apply(outcome.outcome, allowed=None)
        self.case, self.chat_id, self.pressed, self.ctx = mine
        self.say_all(outcome.tell)
        if who is None:
            who = "system" if isinstance(self.ctx.event, TimerFired) else f"staff:{actor.user_id}"
        for action, subject, detail in outcome.audit:
            self.decision.audit.append(AuditEntry(who, action, subject, detail))

    def stay(self, outcome: Stay) -> None:
        case = self.case
        if case is None:
            self.say_all(outcome.say)
            return
        changed = bool(outcome.data)
        if changed:
            case.data.update(outcome.data)
            case.updated_at = self.ctx.now
            case.turn += 1
            self.touch(case)
        self.add_timers(case, outcome.timers)
        self.audit_all(case, outcome.audit)
        self.say_all(outcome.say)
        self.notify_all(outcome.notify)
        self.send_letters(outcome.letters)
        if not outcome.show_prompt:
            return
        prompt = self.engine.render(case, self.ctx.language, self.ctx)
        pressed = self.pressed
        if changed and not outcome.say and pressed is not None and pressed.message_id is not None:
            self.emit(EditMessage(case.chat_id, pressed.message_id, prompt.text, prompt.buttons))
        else:
            self.emit(prompt)

    def goto(self, outcome: Goto, allowed: tuple[str, ...] | None) -> None:
        case = self.case
        if case is None:
            raise FlowError(f"Goto({outcome.step!r}) with no open case")
        if allowed is not None and outcome.step not in allowed:
            raise FlowError(f"{case.flow}:{case.step} may not go to {outcome.step!r}")
        if allowed is None and outcome.step != BACK:
            flow_id, step_id = qualify(case.flow, outcome.step)
            if step_id not in self.engine.flows[flow_id].entries:
                raise FlowError(f"{outcome.step!r} is not a declared entry of flow {flow_id}")
        self.mark_pressed(case)
        destination = str(case.data.pop("_return")) if outcome.step == BACK else outcome.step
        flow_id, step_id = qualify(case.flow, destination)
        target = self.engine.flows[flow_id].step(step_id)
        leaving = (case.flow, case.step) != (flow_id, step_id)
        if leaving:
            self.forget_secrets(case)
        if flow_id != case.flow:
            metrics.case_entered(flow_id)
        case.flow, case.step = flow_id, step_id
        case.data.update(outcome.data)
        case.turn += 1
        case.updated_at = self.ctx.now
        case.status = "open"
        self.touch(case)
        self.say_all(outcome.say)
        self.notify_all(outcome.notify)
        self.send_letters(outcome.letters)
        self.emit(self.engine.render(case, self.ctx.language, self.ctx))
        self.add_timers(case, outcome.timers)
        self.audit_all(case, outcome.audit)
        if target.final:
            self.finish(case, target.final)

    def begin(self, outcome: Begin) -> None:
        if self.case is not None:
            self.mark_pressed(self.case)
            self.finish(self.case, "replaced")
        sender = self.ctx.event.sender
        flow = self.engine.flows[outcome.flow]
        case = Case(
            id=new_case_id(),
            user_id=sender.user_id,
            chat_id=sender.chat_id,
            flow=flow.id,
            step=flow.start,
            data=dict(outcome.data),
            created_at=self.ctx.now,
            updated_at=self.ctx.now,
        )
        self.case = case
        self.ctx = replace(self.ctx, case=case)
        self.touch(case)
        self.audit("case.opened", case, {"flow": flow.id})
        self.say_all(outcome.say)
        self.emit(self.engine.render(case, self.ctx.language, self.ctx))

    def close(self, outcome: Close) -> None:
        if self.case is not None:
            self.mark_pressed(self.case)
            self.case.data.update(outcome.data)
            self.add_timers(self.case, outcome.timers)
            self.finish(self.case, outcome.status)
        self.say_all(outcome.say)
        self.notify_all(outcome.notify)

    def forget_secrets(self, case: Case) -> None:
        """Remove from the case the secrets its current step keeps (`Step.secrets`): it is leaving the step."""
        flow = self.engine.flows.get(case.flow)
        if flow is None or not flow.has(case.step):
            return
        for key in flow.step(case.step).secrets:
            case.data.pop(key, None)

    def finish(self, case: Case, status: str) -> None:
        if status not in ACTIVE:
            self.forget_secrets(case)
        case.status = status
        case.updated_at = self.ctx.now
        case.closed_at = None if status in ACTIVE else self.ctx.now
        case.turn += 1
        self.touch(case)
        if status not in ACTIVE:
            self.closed.append(case)
        self.audit("case.closed", case, {"status": status, "flow": case.flow, "step": case.step})

    # --- output -------------------------------------------------------------------------------------------

    def mark_pressed(self, case: Case) -> None:
        """Edit the message whose button was pressed: show the choice, drop the keyboard."""
        pressed, choice = self.pressed, self.ctx.choice
        if pressed is None or pressed.message_id is None or choice is None:
            return
        before = self.engine.render(case, self.ctx.language, self.ctx)
        label = self.engine.renderer.label(choice, self.ctx, self.ctx.language)
        chosen = self.engine.say(Text("engine.chosen", {"label": label}), self.ctx.language)
        self.emit(EditMessage(case.chat_id, pressed.message_id, f"{before.text}\n\n{chosen}"))
        self.pressed = None

    def answer(self, event: ButtonPressed, message: Text | None) -> None:
        if event.callback_id is not None:
            text = self.engine.say(message, self.ctx.language) if message else ""
            self.emit(AnswerButton(self.chat_id, event.callback_id, text))

    def send(self, message: Text) -> None:
        text = self.engine.say(message, self.ctx.language)
        self.emit(SendMessage(self.chat_id, text, sensitive=message.sensitive))

    def say_to(self, outcome: Say) -> None:
        for chat_id in outcome.to_chats or (self.chat_id,):
            language = outcome.language or self.language_of(chat_id)
            for message in outcome.say:
                self.emit(SendMessage(chat_id, self.engine.say(message, language)))
        self.send_letters(outcome.letters)
        self.decision.effects.extend(outcome.effects)
        actor = self.ctx.event.sender.user_id
        for action, subject, detail in outcome.audit:
            self.decision.audit.append(AuditEntry(f"staff:{actor}", action, subject, detail))

    def send_letters(self, letters: tuple[Letter, ...]) -> None:
        for letter in letters:
            for chat_id in letter.chat_ids:
                self.emit_letter(chat_id, letter)

    def emit_letter(self, chat_id: int, letter: Letter) -> None:
        for reply in self.engine.renderer.letter(chat_id, letter, self.language_of(chat_id)):
            self.emit(reply)

    def language_of(self, chat_id: int) -> str | None:
        """The language of this turn's chat, or of another private chat's user (a staff member, say)."""
        return self.ctx.language if chat_id == self.chat_id else self.languages.get(chat_id)

    def say_all(self, messages: tuple[Text, ...]) -> None:
        for message in messages:
            self.send(message)

    def notify_all(self, notices: tuple[Notice, ...]) -> None:
        for notice in notices:
            subject, body = (plain_text(self.engine.say(t, self.ctx.language)) for t in (notice.subject, notice.body))
            self.emit(Notify(self.chat_id, notice.channel, notice.to, subject, body))

    def emit(self, reply: Reply) -> None:
        self.decision.replies.append(reply)

    def touch(self, case: Case) -> None:
        if all(c is not case for c in self.decision.cases):
            self.decision.cases.append(case)

    def add_timers(self, case: Case, specs: tuple[TimerSpec, ...]) -> None:
        for spec in specs:
            handled_at = self.engine.flows[case.flow].handling(spec.kind)
            if not (handled_at or spec.detached or spec.any_step):
                raise FlowError(f"no step of flow {case.flow} handles a {spec.kind!r} timer")
            binding = spec.binding(handled_at)
            self.decision.timers.append(NewTimer(case.id, case.user_id, case.chat_id, binding, spec))

    def audit_all(self, case: Case, lines: tuple[AuditLine, ...]) -> None:
        for action, subject, detail in lines:
            self.decision.audit.append(AuditEntry(f"user:{case.user_id}", action, subject, detail))

    def audit(self, action: str, case: Case, detail: Mapping[str, Any]) -> None:
        self.decision.audit.append(AuditEntry(f"user:{case.user_id}", action, f"case:{case.id}", detail))
