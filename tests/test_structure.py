"""Properties of the code base itself: the core stays framework-free, flows have no dead ends, texts exist."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from flows.desk import METHODS, START
from flows.engine import BACK
from flows.model import Flow, qualify
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


@pytest.mark.parametrize("flow", FLOWS, ids=lambda f: f.id)
def test_no_step_is_a_dead_end(flow: Flow) -> None:
    for step in flow.steps:
        if step.final:
            continue
        assert step.targets(), f"{flow.id}:{step.id} has no way out"
        if step.on_input is not None:
            assert step.exits, f"{flow.id}:{step.id} takes input but declares no exits"


def test_every_step_is_reachable() -> None:
    entry_points = {"start:resume", "start:cancel_confirm", "reverify:enrol", "reverify:restored"}  # commands, staff
    reachable = {f"{flow.id}:{flow.start}" for flow in FLOWS} | entry_points
    for flow in FLOWS:
        for _, target in all_targets(flow):
            if target != BACK:
                reachable.add(":".join(qualify(flow.id, target)))
    every = {f"{flow.id}:{step.id}" for flow in FLOWS for step in flow.steps}
    assert every - reachable == set()


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
    built |= {f"commands.{c}" for c in ("start", "status", "cancel", "help", "queue", "case", "reject", "stats",
                                         "audit", "broadcast", "broadcast_cancel")}
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
    missing = [f"{file}::{name}" for file, name in named
               if not re.search(rf"^(async )?def {name}\(", (ROOT / "tests" / file).read_text(), flags=re.M)]
    assert not missing
