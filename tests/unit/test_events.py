"""The one command parser that the Telegram front ends, the console and the chat driver share."""

from __future__ import annotations

import pytest

from flows.events import parse_command


@pytest.mark.parametrize(("line", "parsed"), [
    ("/start", ("start", "")),
    ("/Start again", ("start", "again")),
    ("/start@desk_bot   again  ", ("start", "again")),
    ("/START@Desk_Bot", ("start", "")),
    ("/reject AbCdEfGhIjKl Wrong  Name", ("reject", "AbCdEfGhIjKl Wrong  Name")),
    ("/broadcast_cancel", ("broadcast_cancel", "")),
    ("/", ("", "")),
])
def test_a_command_is_its_lowercase_name_and_its_arguments(line: str, parsed: tuple[str, str]) -> None:
    assert parse_command(line, "desk_bot") == parsed
    assert parse_command(line) == parsed


@pytest.mark.parametrize("line", ["start", " /start", "", "hello /start", "1"])
def test_a_line_not_starting_with_a_slash_is_no_command(line: str) -> None:
    assert parse_command(line) is None


def test_a_command_for_another_bot_is_ignored_only_when_the_bot_is_known() -> None:
    assert parse_command("/start@other_bot x", "desk_bot") is None
    assert parse_command("/start@other_bot x") == ("start", "x")
