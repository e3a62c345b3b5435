"""A small flow used only by the engine tests: ask a name, confirm it, done; with a reminder timer."""

from __future__ import annotations

from datetime import timedelta

from flows.engine import Engine
from flows.model import Accepts, Begin, Choice, Close, Context, Flow, Goto, Outcome, Stay, Step, TimerSpec, leads_to
from flows.texts import Text


@leads_to("confirm")
async def take_name(ctx: Context) -> Outcome:
    name = ctx.text.strip()
    if not name.isalpha() or len(name) > 20:
        return Stay(say=(Text("engine.expects_text"),))
    reminder = TimerSpec("nudge", ctx.now + timedelta(minutes=5))
    return Goto("confirm", data={"name": name}, timers=(reminder,))


async def nudge(ctx: Context) -> Outcome:
    return Stay(say=(Text("engine.use_buttons"),), show_prompt=False)


async def explode(ctx: Context) -> Outcome:
    raise RuntimeError("a bug in a flow")


SIGNUP = Flow(
    id="signup",
    title="signup",
    start="ask_name",
    steps=(
        Step("ask_name", prompt="test.ask_name", accepts=Accepts.TEXT, on_input=take_name),
        Step(
            "confirm",
            prompt="test.confirm",
            prompt_params=lambda ctx: {"name": ctx.data["name"]},
            choices=(
                Choice("yes", "test.yes", to="done"),
                Choice("no", "test.no", to="ask_name"),
                Choice("boom", "test.boom", run=explode),
            ),
            on_timer={"nudge": nudge},
        ),
        Step("done", prompt="test.done", final="completed"),
    ),
)


async def start(ctx: Context) -> Outcome:
    return Begin("signup")


async def cancel(ctx: Context) -> Outcome:
    return Close("cancelled", say=(Text("test.cancelled"),))


def make_engine() -> Engine:
    return Engine({"signup": SIGNUP}, {"start": start, "cancel": cancel}, translator=texts_for_tests)


TEXTS = {
    "test.ask_name": "What is your name?",
    "test.confirm": "Is {name} right?",
    "test.yes": "Yes",
    "test.no": "No",
    "test.boom": "Break",
    "test.done": "Thanks!",
    "test.cancelled": "Cancelled.",
}


def texts_for_tests(message: Text | str, language: str | None = None, **defaults: object) -> str:
    """The real catalog for engine texts, this table for the test flow's own."""
    from flows.texts import translate

    message = Text(message) if isinstance(message, str) else message
    if message.key in TEXTS:
        return TEXTS[message.key].format(**{**defaults, **message.params})
    return translate(message, language, **defaults)
