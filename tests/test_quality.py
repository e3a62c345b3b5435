"""The linters are part of the test suite, so CI holds every commit to them."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_ruff_is_clean() -> None:
    result = run("ruff", "check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict_is_clean_on_flows_and_bot() -> None:
    result = run("mypy")
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_package_ships_a_license_and_its_type_markers() -> None:
    assert "MIT License" in (ROOT / "LICENSE").read_text()
    for package in ("flows", "bot"):
        assert (ROOT / package / "py.typed").is_file(), package
    package_data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert "py.typed" in package_data["flows"] and "py.typed" in package_data["bot"]


def test_the_linters_are_pinned_to_exact_versions() -> None:
    test_extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["test"]
    for linter in ("ruff", "mypy"):
        pins = [requirement for requirement in test_extra if re.match(rf"{linter}\b", requirement)]
        assert len(pins) == 1 and re.fullmatch(rf"{linter}==[\w.]+", pins[0]), pins
