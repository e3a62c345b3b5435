"""The Mermaid diagrams are drawn from the flow data: every step and button shows, each edge once, same every time."""

from __future__ import annotations

import re

import pytest

from flows.desk import METHODS, START
from flows.diagram import diagrams_markdown, english, mermaid
from flows.methods.reverify import REVERIFY
from flows.model import BACK, Accepts, Choice, Context, Flow, Outcome, Stay, Step, leads_to, qualify

FLOWS = (START, *METHODS)
ID = r"[A-Za-z_][A-Za-z0-9_]*"
LABEL = r'"[^"]*"'  # a double quote inside a label must be written #quot;
NODE = re.compile(rf"^{ID}(\(\(start\)\)|\[{LABEL}\]|\(\[{LABEL}\]\)|\[\[{LABEL}\]\])$")
EDGE = re.compile(rf'^(?P<source>{ID}) (?:-->|-\.->)(?:\|"(?P<label>[^"]*)"\|)? (?P<target>{ID})$')
INPUT = {Accepts.TEXT: "text", Accepts.FILE: "photo"}
RUN = "<run>"  # a button that declares no target


def body(diagram: str) -> list[str]:
    lines = diagram.splitlines()
    assert lines[0] == "flowchart TD"
    return [line.strip() for line in lines[1:] if line.strip()]


def edges(diagram: str) -> list[re.Match[str]]:
    return [match for line in body(diagram) if (match := EDGE.match(line))]


def expected_triples(flow: Flow) -> set[tuple[str, str, str]]:
    """(step, target, label) for every input exit and every button target, cross-flow targets qualified."""

    def where(target: str) -> str:
        return target if target in (BACK, RUN) else ":".join(qualify(flow.id, target))

    triples = {(step.id, where(target), INPUT[step.accepts]) for step in flow.steps for target in step.exits}
    triples |= {(step.id, where(target), "timer") for step in flow.steps for target in step.timer_exits()}
    for step in flow.steps:
        for choice in step.choices:
            triples |= {(step.id, where(target), english(choice.label)) for target in choice.targets() or (RUN,)}
    return triples


@pytest.mark.parametrize("flow", FLOWS, ids=lambda f: f.id)
def test_every_line_is_a_node_an_edge_or_blank(flow: Flow) -> None:
    lines = body(mermaid(flow, FLOWS))
    assert all(NODE.match(line) or EDGE.match(line) for line in lines), lines
    declared = {line.split("[")[0].split("(")[0] for line in lines if NODE.match(line)}
    assert {end for edge in edges(mermaid(flow, FLOWS)) for end in (edge["source"], edge["target"])} <= declared


@pytest.mark.parametrize("flow", FLOWS, ids=lambda f: f.id)
def test_every_step_and_button_label_is_drawn(flow: Flow) -> None:
    lines = body(mermaid(flow, FLOWS))
    declared = {line.split("[")[0].split("(")[0] for line in lines if NODE.match(line)}
    assert {step.id for step in flow.steps} <= declared
    labels = {edge["label"] for edge in edges(mermaid(flow, FLOWS))}
    assert {english(choice.label) for step in flow.steps for choice in step.choices} <= labels


@pytest.mark.parametrize("flow", FLOWS, ids=lambda f: f.id)
def test_one_start_edge_into_the_start_step(flow: Flow) -> None:
    starts = [edge for edge in edges(mermaid(flow, FLOWS)) if edge["source"] == "_start"]
    assert [edge["target"] for edge in starts] == [flow.start]
    assert body(mermaid(flow, FLOWS)).count("_start((start))") == 1


@pytest.mark.parametrize("flow", FLOWS, ids=lambda f: f.id)
def test_one_edge_per_distinct_step_target_and_label(flow: Flow) -> None:
    drawn = [edge.group(0) for edge in edges(mermaid(flow, FLOWS)) if edge["source"] != "_start"]
    assert len(drawn) == len(set(drawn)) == len(expected_triples(flow))


@pytest.mark.parametrize("flow", FLOWS, ids=lambda f: f.id)
def test_the_diagram_is_deterministic(flow: Flow) -> None:
    assert mermaid(flow, FLOWS) == mermaid(flow, FLOWS)


@leads_to("finished")
async def finish(ctx: Context) -> Outcome:
    return Stay()


TINY = Flow(
    id="tiny",
    title="menu.title",
    start="ask",
    steps=(
        Step("ask", prompt="desk.greeting", accepts=Accepts.TEXT, on_input=finish,
             choices=(Choice("other", "menu.reverify", to="reverify:warn"),
                      Choice("back", 'say <b>"no"</b> to {who}', to=BACK),
                      Choice("again", "menu.reverify", to="reverify:warn"))),
        Step("finished", prompt="desk.greeting", final="completed"),
    ),
)

TINY_DIAGRAM = """\
flowchart TD
    ask["ask"]
    finished(["finished · completed"])
    _start((start))
    _to_reverify_warn[["→ Security Check Not Available: warn"]]
    _back[["↩ back to where the case was"]]
    _start --> ask
    ask -->|"text"| finished
    ask -->|"Security Check Not Available"| _to_reverify_warn
    ask -->|"say #quot;no#quot; to ‹who›"| _back"""


def test_a_small_flow_is_drawn_exactly() -> None:
    assert mermaid(TINY, (REVERIFY,)) == TINY_DIAGRAM


def test_an_unknown_flow_is_named_by_its_id() -> None:
    assert '_to_reverify_warn[["→ reverify: warn"]]' in mermaid(TINY)


def test_a_button_without_declared_targets_is_drawn_dotted() -> None:
    assert '    resume -.->|"Start over"| _run' in mermaid(START).splitlines()


def test_a_mermaid_keyword_step_id_is_capitalised() -> None:
    flow = Flow(id="x", title="menu.title", start="end", steps=(Step("end", prompt="desk.greeting", final="done"),))
    assert mermaid(flow).splitlines()[1:] == ['    End(["end · done"])', "    _start((start))", "    _start --> End"]


def test_markdown_has_a_titled_mermaid_block_per_flow() -> None:
    markdown = diagrams_markdown(FLOWS)
    for flow in FLOWS:
        assert f"### {english(flow.title)}\n\n```mermaid\n{mermaid(flow, FLOWS)}\n```\n" in markdown
    assert markdown.count("```mermaid") == len(FLOWS)
