"""Mermaid diagrams of flows, drawn from the flow data alone (steps, buttons, accepted input, timers and the
steps their actions are declared to lead to).

`mermaid(flow)` gives one `flowchart TD`; `diagrams_markdown(flows)` gives a Markdown section per flow, for the
README or the command line. The output is deterministic: nodes and edges follow the order the flow declares them.

Labels are the English catalog texts with HTML tags stripped and placeholders shown as ‹name›, since a diagram
has no case to fill them from. Some node ids are reserved and cannot clash with a step id (step ids start with a
lowercase letter): `_start`, `_back` (the engine's BACK), `_run` (a button that declares no step: its action
stays, begins or closes a case) and `_to_<flow>_<step>` for a step in another flow.
"""

from __future__ import annotations

import html
import re
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from flows.model import BACK, Accepts, Flow, Step, qualify
from flows.texts import template

START_NODE = "_start"
BACK_NODE = "_back"
RUN_NODE = "_run"
FIXED_NODES = {
    START_NODE: f"{START_NODE}((start))",
    BACK_NODE: f'{BACK_NODE}[["↩ back to where the case was"]]',
    RUN_NODE: f'{RUN_NODE}[["⚙ decided by the button: stay, begin or close a case"]]',
}
TRIGGERS = {Accepts.TEXT: "text", Accepts.FILE: "photo"}
TIMER = "timer"
KEYWORDS = frozenset({"end", "graph", "subgraph", "flowchart", "direction", "style", "class", "classdef", "click"})
TAG = re.compile(r"<[^>]*>")
MERMAID_ESCAPES = str.maketrans({"#": "#35;", '"': "#quot;", "<": "#lt;", ">": "#gt;"})


def english(key: str) -> str:
    """The English text of a catalog key as one line of plain text, placeholders shown as ‹name›."""
    raw = template(key)
    parsed = string.Formatter().parse(raw)
    filled = "".join(literal + ("" if name is None else f"‹{name}›") for literal, name, _, _ in parsed)
    return " ".join(html.unescape(TAG.sub("", filled)).split())


def quoted(label: str) -> str:
    """A Mermaid string: double-quoted, with the characters Mermaid would misread written as entities."""
    return f'"{label.translate(MERMAID_ESCAPES)}"'


def words(step_id: str) -> str:
    return step_id.replace("_", " ")


def node_id(step_id: str) -> str:
    """The Mermaid id of a step of the drawn flow (a Mermaid keyword is capitalised, as Mermaid asks)."""
    return step_id.capitalize() if step_id.lower() in KEYWORDS else step_id


def step_node(step: Step) -> str:
    if step.final:
        return f"{node_id(step.id)}([{quoted(f'{words(step.id)} · {step.final}')}])"
    return f"{node_id(step.id)}[{quoted(words(step.id))}]"


def trigger(step: Step) -> str:
    """What moves a case along a step's input exits: the kind of input it accepts."""
    return TRIGGERS.get(step.accepts, "")


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    label: str = ""
    dotted: bool = False

    def line(self) -> str:
        arrow = "-.->" if self.dotted else "-->"
        label = f"|{quoted(self.label)}|" if self.label else ""
        return f"{self.source} {arrow}{label} {self.target}"


class _Drawing:
    """Collects one flow's nodes and edges, each once, in the order they are first met."""

    def __init__(self, flow: Flow, titles: Mapping[str, str]) -> None:
        self.flow = flow
        self.titles = titles
        self.nodes = {node_id(step.id): step_node(step) for step in flow.steps}
        self.nodes[START_NODE] = FIXED_NODES[START_NODE]
        self.edges = {Edge(START_NODE, node_id(flow.start)): True}

    def add_step(self, step: Step) -> None:
        for target in step.exits:
            self.add_edge(Edge(node_id(step.id), self.node(target), trigger(step)))
        for target in step.timer_exits():
            self.add_edge(Edge(node_id(step.id), self.node(target), TIMER))
        for choice in step.choices:
            label = english(choice.label)
            for target in choice.targets():
                self.add_edge(Edge(node_id(step.id), self.node(target), label))
            if not choice.targets():
                self.add_edge(Edge(node_id(step.id), self.fixed(RUN_NODE), label, dotted=True))

    def add_edge(self, edge: Edge) -> None:
        self.edges.setdefault(edge, True)

    def node(self, target: str) -> str:
        """The node a target leads to, declaring it first if it is not a step of this flow."""
        if target == BACK:
            return self.fixed(BACK_NODE)
        flow_id, step_id = qualify(self.flow.id, target)
        if flow_id == self.flow.id:
            return node_id(step_id)
        node = f"_to_{flow_id}_{step_id}"
        title = english(self.titles[flow_id]) if flow_id in self.titles else flow_id
        self.nodes.setdefault(node, f"{node}[[{quoted(f'→ {title}: {words(step_id)}')}]]")
        return node

    def fixed(self, node: str) -> str:
        self.nodes.setdefault(node, FIXED_NODES[node])
        return node

    def text(self) -> str:
        lines = [*self.nodes.values(), *(edge.line() for edge in self.edges)]
        return "\n".join(["flowchart TD", *(f"    {line}" for line in lines)])


def mermaid(flow: Flow, others: Sequence[Flow] = ()) -> str:
    """A Mermaid `flowchart TD` of one flow; `others` name the flows its cross-flow targets lead into."""
    drawing = _Drawing(flow, {other.id: other.title for other in (*others, flow)})
    for step in flow.steps:
        drawing.add_step(step)
    return drawing.text()


def diagrams_markdown(flows: Sequence[Flow]) -> str:
    """A `### <title>` heading and a fenced mermaid block per flow (cross-flow targets named from `flows`)."""
    sections = [f"### {english(flow.title)}\n\n```mermaid\n{mermaid(flow, flows)}\n```\n" for flow in flows]
    return "\n".join(sections)
