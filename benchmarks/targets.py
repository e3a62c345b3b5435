"""The performance targets (issue 11), checked against what a run measured: met, or missed by how much."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Check:
    section: str
    name: str
    value: float | None
    target: float
    at_least: bool  # True: value >= target; False: value <= target (or < for strict)
    unit: str = ""
    strict: bool = False

    @property
    def met(self) -> bool | None:
        if self.value is None:
            return None
        if self.at_least:
            return self.value >= self.target
        return self.value < self.target if self.strict else self.value <= self.target

    def verdict(self) -> str:
        met = self.met
        if met is None:
            return "not measured"
        if met:
            return "met"
        assert self.value is not None
        gap = abs(self.value - self.target)
        share = f" ({gap / self.target:.0%})" if self.target else ""
        return f"missed by {gap:,.2f}{self.unit}{share}"

    def as_dict(self) -> dict[str, Any]:
        sign = ">=" if self.at_least else ("<" if self.strict else "<=")
        return {"section": self.section, "name": self.name, "value": self.value, "target": f"{sign} {self.target:g}",
                "unit": self.unit, "met": self.met, "verdict": self.verdict()}


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a is not None and b else None


def e2e_checks(result: dict[str, Any]) -> list[Check]:
    """The end-to-end targets for one framework's result (see benchmarks/e2e.py)."""
    section = f"e2e {result['framework']}" + (" on PostgreSQL" if result.get("database") == "PostgreSQL" else "")
    phases = result.get("phases", {})
    echo = result.get("echo", {}).get("updates_per_s")
    checks: list[Check] = []
    for method, want in (("method1", 0.5), ("method3", 0.6)):
        small = phases.get(f"{method}_small")
        if small:
            users = small["concurrency"]
            checks.append(Check(section, f"{method}, {users} users: updates/s ÷ echo's",
                                _ratio(small["updates_per_s"], echo), want, True))
            checks.append(Check(section, f"{method}, {users} users: longest stall", small["longest_stall_ms"], 150,
                                False, " ms"))
        half = phases.get(f"{method}_half")
        if half:
            checks.append(Check(section, f"{method}, half load: step p99", half["p99_ms"], 50, False, " ms", True))
            checks.append(Check(section, f"{method}, half load: longest stall", half["longest_stall_ms"], 150, False,
                                " ms"))
        large = phases.get(f"{method}_large")
        if large:
            users = large["concurrency"]
            checks.append(Check(section, f"{method}, {users} users: lost steps", large["lost_steps"], 0, False))
            checks.append(Check(section, f"{method}, {users} users: longest stall", large["longest_stall_ms"], 300,
                                False, " ms"))
    return checks


def checks_for(results: dict[str, Any]) -> list[Check]:
    checks: list[Check] = []
    for framework in [*results.get("e2e", {}).values(), *results.get("e2e_postgres", {}).values()]:
        if "error" not in framework:
            checks += e2e_checks(framework)
    engine = results.get("engine")
    if engine and "error" not in engine:
        checks.append(Check("engine", "events/s", engine["engine"]["events_per_s"], 5000, True))
        checks.append(Check("engine", "events/s ÷ bare INSERT+COMMIT/s", engine["ratio_to_bare"], 0.8, True))
    scale = results.get("scale")
    if scale and "error" not in scale:
        sizes = scale["sizes"]
        checks.append(Check("scale", f"p99 at {sizes[-1]['cases']:,} cases ÷ p99 at {sizes[0]['cases']:,}",
                            scale["p99_ratio_last_to_first"], 1.5, False))
    timers = results.get("timers")
    if timers and "error" not in timers:
        checks.append(Check("timers", f"start-up with {timers['pending']:,} pending", timers["startup_s"], 2, False,
                            " s", True))
        checks.append(Check("timers", "lateness p99", timers["late_p99_ms"], 1000, False, " ms", True))
    broadcast = results.get("broadcast")
    if broadcast and "error" not in broadcast:
        paced = broadcast["pacing_on"]
        checks.append(Check("broadcast", "most sends in any 1-second window (paced)", paced["max_in_any_second"],
                            paced["rate"], False))
    return checks
