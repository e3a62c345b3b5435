"""Properties of the code base itself: the core stays framework-free, flows have no dead ends, texts exist."""

from __future__ import annotations

import ast
import inspect
import re
import subprocess
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flows.desk import METHODS, START
from flows.model import BACK, Choice, Context, Flow, Goto, Outcome, Step, check_links, exits_of, leads_to, qualify
from flows.stats import CATALOG_KEYS
from flows.texts import known_keys

ROOT = Path(__file__).resolve().parent.parent
FLOWS = (START, *METHODS)
BY_ID = {flow.id: flow for flow in FLOWS}
FRAMEWORKS = ("telegram", "aiogram")


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("path", sorted((ROOT / "flows").rglob("*.py")), ids=lambda p: str(p.relative_to(ROOT)))
def test_flows_package_imports_no_telegram_framework(path: Path) -> None:
    offending = {name for name in imported_modules(path) if name.split(".")[0] in FRAMEWORKS}
    assert not offending, f"{path} imports {offending}"


def test_the_import_check_would_catch_a_framework_import(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("import os\nfrom aiogram import Router\nimport telegram.ext\n")
    assert {"aiogram", "telegram.ext"} <= imported_modules(sample)


def all_targets(flow: Flow) -> list[tuple[str, str]]:
    return [(step.id, target) for step in flow.steps for target in step.targets()]


@pytest.mark.parametrize("flow", FLOWS, ids=lambda f: f.id)
def test_every_exit_leads_to_an_existing_step(flow: Flow) -> None:
    for source, target in all_targets(flow):
        if target == BACK:
            continue
        flow_id, step_id = qualify(flow.id, target)
        assert flow_id in BY_ID and BY_ID[flow_id].has(step_id), f"{flow.id}:{source} → {target}"


@leads_to("nowhere")
async def lost(ctx: Context) -> Outcome:
    return Goto("nowhere")


def test_a_step_leading_to_no_step_fails_as_the_flow_is_built() -> None:
    with pytest.raises(ValueError, match="leads to 'nowhere'"):
        Flow("f", "f", "ask", (Step("ask", "p", choices=(Choice("go", "l", run=lost),)),))
    with pytest.raises(ValueError, match="leads to 'nowhere'"):
        Flow("f", "f", "ask", (Step("ask", "p", choices=(Choice("go", "l", to="nowhere"),)),))
    with pytest.raises(ValueError, match="leads to 'nowhere'"):
        Flow("f", "f", "ask", (Step("ask", "p", on_input=lost),))
    with pytest.raises(ValueError, match="leads to 'nowhere'"):
        Flow("f", "f", "ask", (Step("ask", "p", on_timer={"ping": lost}),))


def test_a_wrong_start_or_entry_fails_as_the_flow_is_built() -> None:
    with pytest.raises(ValueError, match="start 'nowhere'"):
        Flow("f", "f", "nowhere", (Step("ask", "p", final="done"),))
    with pytest.raises(ValueError, match="entry 'nowhere'"):
        Flow("f", "f", "ask", (Step("ask", "p", final="done"),), entries=("nowhere",))
    with pytest.raises(ValueError, match="not a declared entry"):
        START.entry("menu")


def test_a_target_in_another_flow_is_checked_with_the_flows_it_is_linked_to() -> None:
    flow = Flow("f", "f", "ask", (Step("ask", "p", choices=(Choice("go", "l", to="reverify:nowhere"),)),))
    with pytest.raises(ValueError, match="leads to 'reverify:nowhere'"):
        check_links((flow, *FLOWS))
    with pytest.raises(ValueError, match="leads to 'reverify:nowhere'"):
        check_links((flow,))  # no flow "reverify" at all
    assert check_links(FLOWS) == FLOWS


@pytest.mark.parametrize("flow", FLOWS, ids=lambda f: f.id)
def test_no_step_is_a_dead_end(flow: Flow) -> None:
    for step in flow.steps:
        if step.final:
            continue
        assert step.targets(), f"{flow.id}:{step.id} has no way out"
        if step.on_input is not None:
            assert step.exits, f"{flow.id}:{step.id} takes input but declares no exits"


def test_every_step_is_reachable() -> None:
    reachable = {f"{flow.id}:{step}" for flow in FLOWS for step in (flow.start, *flow.entries)}
    for flow in FLOWS:
        for _, target in all_targets(flow):
            if target != BACK:
                reachable.add(":".join(qualify(flow.id, target)))
    every = {f"{flow.id}:{step.id}" for flow in FLOWS for step in flow.steps}
    assert every - reachable == set()


def actions(flow: Flow) -> Iterator[tuple[str, Any]]:
    """(where, action) for every input, button and timer action of a flow."""
    for step in flow.steps:
        if step.on_input is not None:
            yield f"{flow.id}:{step.id} input", step.on_input
        for choice in step.choices:
            if choice.run is not None:
                yield f"{flow.id}:{step.id} {choice.id}", choice.run
        for kind, action in step.on_timer.items():
            yield f"{flow.id}:{step.id} timer {kind}", action


def goto_targets(action: Any) -> set[str]:
    """The steps an action's `Goto`s name, read from its source: literals, conditionals between literals, names
    bound to a step id (or to a function declared to lead to some) and locals assigned from those."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(action)))
    known = inspect.getclosurevars(action)
    bound = {**known.globals, **known.nonlocals}
    local = {node.targets[0].id: node.value for node in ast.walk(tree)
             if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)}

    def steps(node: ast.expr) -> set[str]:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return {node.value}
        if isinstance(node, ast.IfExp):
            return steps(node.body) | steps(node.orelse)
        if isinstance(node, ast.Name) and node.id in local:
            return steps(local[node.id])
        if isinstance(node, ast.Name) and node.id in bound:
            value = bound[node.id]
            return {value} if isinstance(value, str) else set()
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in bound:
            value = bound[node.func.id]
            return set(exits_of(value)) if callable(value) else set()
        raise AssertionError(f"cannot tell where {ast.unparse(node)} leads (in {action.__qualname__})")

    calls = [node for node in ast.walk(tree) if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)]
    return {step for call in calls if call.func.id == "Goto" for step in steps(call.args[0])}  # type: ignore[attr-defined]


@pytest.mark.parametrize("flow", FLOWS, ids=lambda f: f.id)
def test_every_action_goes_exactly_where_it_is_declared_to_lead(flow: Flow) -> None:
    for where, action in actions(flow):
        assert goto_targets(action) == set(exits_of(action)), where


def test_the_source_check_would_catch_an_undeclared_goto() -> None:
    @leads_to("done")
    async def drifted(ctx: Context) -> Outcome:
        return Goto("done") if ctx.text else Goto("elsewhere")

    assert goto_targets(drifted) == {"done", "elsewhere"}


def text_keys_in_source() -> set[str]:
    pattern = re.compile(r"""\b(?:text|Text)\(\s*"([a-z_]+\.[a-z_]+)\"""")
    keys: set[str] = set()
    for path in (ROOT / "flows").rglob("*.py"):
        keys.update(pattern.findall(path.read_text()))
    return keys


def text_keys_in_flows() -> set[str]:
    keys = {flow.title for flow in FLOWS}
    for flow in FLOWS:
        for step in flow.steps:
            keys.add(step.prompt)
            keys.update(choice.label for choice in step.choices)
    return keys


def test_every_text_has_an_english_catalog_entry() -> None:
    built = {f"codes.{status}" for status in ("missing", "expired")}
    built |= {f"codes.{kind}_{factor}" for kind in ("sent", "chat") for factor in ("phone", "email")}
    built |= {f"{flow}.wrong_{factor}" for flow in ("reverify", "phone") for factor in ("phone", "email")}
    built |= {f"review.{who}_{item}" for who in ("changed", "staff") for item in ("totp", "phone", "email")}
    built |= {f"{key}_{part}" for key in ("limits.paused_email", "phone.changed_email", "review.reset_email")
              for part in ("subject", "body")}
    built |= {f"desk.state_{state}" for state in ("open", "review")}
    built |= {f"engine.expects_{kind}" for kind in ("text", "file")}
    built |= {f"guard.{kind}" for kind in ("key", "code", "password")}
    built |= {f"reverify.not_on_account_{item}" for item in ("totp", "phone", "email")}
    built |= set(CATALOG_KEYS) | {f"review.{k}" for k in ("restore_totp", "restore_phone", "restore_email")}
    built |= {f"review.btn_{a}" for a in ("approve", "reject", "more")}
    built |= {f"broadcast.{k}" for k in ("outcome_finished", "outcome_cancelled", "audience_all", "audience_open",
                                          "audience_language", "btn_send", "btn_cancel", "btn_all", "btn_open")}
    built |= {f"review.reason_{r}" for r in ("docs", "mismatch", "fraud")}
    built |= {f"review.check_{c}" for c in ("phone_verified", "email_verified", "answer_verified")}
    built |= {f"desk.state_{s}" for s in ("approved", "rejected", "completed", "cancelled", "abandoned", "failed")}
    built |= {f"commands.{c}" for c in ("start", "status", "cancel", "help", "language", "privacy", "mydata", "delete",
                                         "queue", "case", "reject", "stats", "audit", "broadcast", "broadcast_cancel")}
    missing = (text_keys_in_source() | text_keys_in_flows() | built) - known_keys()
    assert not missing


def test_readme_test_command_is_what_ci_runs() -> None:
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    commands = re.findall(r"```sh\n(.*?)\n```", readme, flags=re.S)
    test_command = next(c for c in commands if "pytest" in c)
    assert test_command in ci


def test_readme_diagrams_are_up_to_date() -> None:
    from flows.desk import all_flows
    from flows.diagram import diagrams_markdown

    readme = (ROOT / "README.md").read_text()
    embedded = readme.split("<!-- flows:begin -->\n", 1)[1].split("<!-- flows:end -->", 1)[0]
    assert embedded == diagrams_markdown(all_flows()), "run: recovery-bot flows diagram --readme README.md"


def test_every_setting_is_in_env_example_and_the_readme() -> None:
    from bot.config import Settings

    env_example = (ROOT / ".env.example").read_text()
    readme = (ROOT / "README.md").read_text()
    for name in Settings.model_fields:
        assert f"\n{name.upper()}=" in env_example, f"{name.upper()} is missing from .env.example"
        assert f"`{name.upper()}`" in readme, f"{name.upper()} is missing from the README's settings"


def test_every_defence_in_the_security_page_names_a_test_that_exists() -> None:
    page = (ROOT / "docs" / "SECURITY.md").read_text()
    header, defences = "", []
    for line in page.splitlines():
        if not line.startswith("|"):
            header = ""
        elif not header:
            header = line
        elif "shown by" in header and not set(line) <= set("|- "):
            defences.append(line)
    assert defences and all("::test_" in row for row in defences), [row for row in defences if "::test_" not in row]
    named = re.findall(r"`(test_[a-z0-9_]+\.py)::(test_[a-z0-9_]+)`", page)
    files = {path.name: path for path in (ROOT / "tests").rglob("test_*.py")}  # a file's name is unique across layers
    missing = [f"{file}::{name}" for file, name in named if file not in files
               or not re.search(rf"^(async )?def {name}\(", files[file].read_text(), flags=re.M)]
    assert not missing


@pytest.mark.parametrize("flow", FLOWS, ids=lambda f: f.id)
def test_a_step_waits_for_a_sent_code_exactly_where_the_code_timers_apply(flow: Flow) -> None:
    assert {step.id for step in flow.steps if step.code_factor} == set(flow.handling("codes_expired"))


def test_every_command_of_the_help_is_in_the_readmes_command_list() -> None:
    import argparse

    from bot.cli import build_parser

    def commands(parser: argparse.ArgumentParser, prefix: str) -> Iterator[str]:
        subparsers = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subparsers:
            yield prefix
        for action in subparsers:
            for name, sub in action.choices.items():
                yield from commands(sub, f"{prefix} {name}")

    readme = (ROOT / "README.md").read_text()
    listing = readme.split("## The command\n", 1)[1].split("```", 2)[1]
    missing = [command for command in commands(build_parser(), "recovery-bot") if command not in listing]
    assert not missing, "add them to README's 'The command'"


def test_no_file_holds_merge_conflict_markers() -> None:
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    texts = [ROOT / name for name in tracked if Path(name).suffix in (".py", ".md", ".toml", ".yaml", ".po", ".conf")]
    marked = [path.name for path in texts if path.is_file()
              and re.search(r"^(<{7} |>{7} )", path.read_text(errors="replace"), flags=re.M)]
    assert not marked
