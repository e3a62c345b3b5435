"""RESULTS.md from a run's results (the same data as RESULTS.json): nothing in it is typed by hand."""

from __future__ import annotations

from typing import Any


def _n(value: Any, digits: int = 1) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def _mib(value: Any) -> str:
    return "–" if value is None else f"{value / 2**20:,.1f} MiB"


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return [*lines, ""]


def _error(name: str, result: dict[str, Any] | None) -> list[str] | None:
    if result is None:
        return ["Not run in this run (`--only`).", ""]
    if "error" in result:
        return [f"**{name} failed:** `{result['error']}` (see the run's output).", ""]
    return None


def header(results: dict[str, Any]) -> list[str]:
    m = results["machine"]
    quick = " **Quick run (`--quick`): small sizes, a smoke test; the figures are not comparable.**" \
        if results.get("quick") else ""
    return [
        "# Benchmark results",
        "",
        f"Written by `benchmarks/run` (`{results['command']}`) from what it measured; do not edit by hand, run it "
        f"again.{quick}",
        "",
        f"- **Date:** {m['date']}; the run took {_n(results.get('total_seconds'))} s",
        f"- **Commit:** `{m['commit'][:12]}` {m['commit_subject']}"
        f"{' (with uncommitted changes)' if m['dirty'] else ''}",
        f"- **Machine:** {m['cpu']}, {m['cores']} cores, {_mib(m['ram_bytes'])} RAM; Python {m['python']}; "
        f"{m['platform']}",
        f"- **Load average** (1, 5, 15 min) at the start {m['load_average']}, at the end "
        f"{m.get('load_average_end')}: above 0 before the run means other work shared the machine, and every figure "
        "is lower for it; ratios within the run (desk ÷ echo, engine ÷ bare INSERT) are fairer than absolutes.",
        f"- **Sections:** {', '.join(results['sections'])}; frameworks: {', '.join(results['frameworks'])}",
        f"- **Changed for the benchmark:** `INBOUND_LIMIT={results['inbound_limit']}` (the default is 20 messages per "
        "user in any 10 s): simulated users act far faster than people and would otherwise be throttled. Codes are "
        "shown in the chat (`CODE_DELIVERY=chat`, as the e2e tests do); `LOG_LEVEL=INFO`, the default.",
        "",
    ]


def targets(results: dict[str, Any]) -> list[str]:
    rows = [[t["section"], t["name"], _n(t["value"], 2) + t["unit"], t["target"] + t["unit"],
             ("✅ " if t["met"] else "❌ " if t["met"] is False else "") + t["verdict"]]
            for t in results.get("targets", [])]
    return ["## Targets", "", *_table(["section", "figure", "measured", "target", "verdict"], rows)]


PHASES = [("echo", "echo bot"), ("method1_small", "Method 1, saturation"), ("method1_half", "Method 1, half load"),
          ("method3_small", "Method 3, saturation"), ("method3_half", "Method 3, half load"),
          ("method1_large", "Method 1, many users"), ("method3_large", "Method 3, many users")]


def e2e(results: dict[str, Any]) -> list[str]:
    lines = ["## 1. End to end: `recovery-bot run` beside an echo bot", "",
             "Each row is one phase against one bot process (the echo bot, then the desk), the test Bot API server "
             "and the simulated users in this process. *users*: closed loop, that many users at once, each starting "
             "the next flow (fresh user, fresh account) when one ends, for the window, then the steps in flight "
             "finish; *half load*: open loop, flows started at a fixed rate for half the saturation's updates/s. "
             "A step is one user action until the awaited message arrives. updates/s counts the steps completed "
             "within the window (load offered), p50/p99 every step; the longest stall is the longest time within "
             "the window with no step completing. API calls exclude getUpdates (counted apart). The echo bots "
             "answer each update before taking the next (python-telegram-bot's default), so their rate is bound "
             "by the test server's answer time as well as by their own CPU.", ""]
    frameworks = results.get("e2e")
    on_postgres = {f"{name} on PostgreSQL": found for name, found in (results.get("e2e_postgres") or {}).items()}
    if frameworks is None and not on_postgres:
        return [*lines, "Not run in this run (`--only`).", ""]
    if on_postgres:
        lines += ["The desk runs on SQLite (its file on local disk), then, in the sections *on PostgreSQL*, on a "
                  "PostgreSQL server of its own on this machine (a Unix socket; fsync on, `synchronous_commit=off`: "
                  "commits survive the process, as SQLite's do with `synchronous=NORMAL`), each with its own echo "
                  "bot run beside it.", ""]
    for name, found in {**(frameworks or {}), **on_postgres}.items():
        lines += [f"### {name}", ""]
        problem = _error(f"e2e {name}", found)
        if problem:
            lines += problem
            continue
        echo = found["echo"]["updates_per_s"]
        rows = []
        for key, label in PHASES:
            phase = found["echo"] if key == "echo" else found["phases"].get(key)
            if phase is None:
                continue
            load = (f"{phase['concurrency']} users, {_n(phase['window_s'])} s" if phase.get("concurrency")
                    else f"{_n(phase.get('rate_flows_per_s'))} flows/s ({_n(phase.get('offered_updates_per_s'))} "
                         f"updates/s) for {_n(phase['window_s'])} s")
            rows.append([label, load, _n(phase["steps"]), _n(phase["updates_per_s"]),
                         _n(round(phase["updates_per_s"] / echo, 2), 2) if echo else "–",
                         _n(phase["p50_ms"]), _n(phase["p99_ms"]), _n(phase["longest_stall_ms"]),
                         _n(phase["lost_steps"]), _n(phase["api_calls_per_update"], 2),
                         _n(phase["get_updates_per_update"], 3), _n(phase["bot_cpu_s"], 2),
                         _n(phase["bot_cpu_ms_per_update"], 2)])
        lines += _table(["phase", "load", "steps", "updates/s", "÷ echo", "p50 ms", "p99 ms", "longest stall ms",
                         "lost steps", "API calls/update", "getUpdates/update", "bot CPU s", "CPU ms/update"], rows)
        lines += [f"Start-up to the first getUpdates: echo {found['echo_startup_s']} s, "
                  f"desk {found['desk_startup_s']} s. "
                  f"{found['import_accounts']['accounts']:,} fresh accounts imported with `recovery-bot accounts "
                  f"import` in {found['import_accounts']['seconds']} s ({found.get('accounts_left', 0):,} left "
                  f"unused). The desk exited with code {found.get('desk_exit_code')}.", ""]
    return [*lines, *side_by_side(frameworks or {}, results.get("e2e_postgres") or {})]


def side_by_side(sqlite: dict[str, Any], postgres: dict[str, Any]) -> list[str]:
    """Each phase's updates/s and p99 on PostgreSQL beside SQLite, for the frameworks run on both."""
    rows = []
    for name in (n for n in sqlite if n in postgres):
        lite, pg = sqlite[name], postgres[name]
        if "error" in lite or "error" in pg:
            continue
        for key, label in PHASES:
            a, b = lite["phases"].get(key), pg["phases"].get(key)
            if a is None or b is None:
                continue
            ratio = round(b["updates_per_s"] / a["updates_per_s"], 2) if a["updates_per_s"] else None
            rows.append([name, label, _n(a["updates_per_s"]), _n(b["updates_per_s"]), _n(ratio, 2),
                         _n(a["p99_ms"]), _n(b["p99_ms"]), _n(a["lost_steps"]), _n(b["lost_steps"])])
    if not rows:
        return []
    return ["### PostgreSQL beside SQLite", "", *_table(
        ["framework", "phase", "updates/s SQLite", "updates/s PostgreSQL", "PostgreSQL ÷ SQLite", "p99 ms SQLite",
         "p99 ms PostgreSQL", "lost SQLite", "lost PostgreSQL"], rows)]


def memory(results: dict[str, Any]) -> list[str]:
    lines = ["## 4. Memory: `recovery-bot run` holding open cases", "",
             "In the desk process of section 1, before its phases: RSS after start-up, then cases opened through "
             "the bot (each a fresh user: /start, then Method 3, which opens the case), then the open cases topped "
             "up with copies of a live one inserted into the database (the desk keeps cases in the database, so "
             "those cost it no memory until their users write). Bytes per open case = RSS growth ÷ cases opened "
             "live.", ""]
    frameworks = results.get("e2e")
    if frameworks is None:
        return [*lines, "Not run in this run (`--only`).", ""]
    rows = []
    for name, found in frameworks.items():
        held = found.get("memory")
        if not held:
            continue
        rows.append([name, _n(held["open_cases"]), _n(held["opened_live"]), _n(held["inserted_copies"]),
                     _mib(held["rss_before_bytes"]), _mib(held["rss_after_bytes"]), _mib(held["peak_rss_bytes"]),
                     _n(held["bytes_per_live_case"])])
    return [*lines, *_table(["framework", "open cases held", "opened live", "inserted copies", "RSS after start-up",
                              "RSS holding them", "peak RSS", "bytes per open case"], rows)]


def engine(results: dict[str, Any]) -> list[str]:
    lines = ["## 2. The engine in process", "",
             "The real runner on SQLite (the small test flow: /start, then a name), all chats at once, a transport "
             "that only counts; an event's latency is from `runner.handle` to its return (committed). Beside it, "
             "bare single-row INSERT + COMMIT through aiosqlite one after the other (WAL, synchronous=NORMAL), in "
             "the same run.", ""]
    found = results.get("engine")
    problem = _error("engine", found)
    if problem or found is None:
        return [*lines, *(problem or [])]
    e, bare = found["engine"], found["bare_insert_commit"]
    lines += _table(["chats", "events", "committed events/s", "with delivery recorded /s", "p50 ms", "p99 ms",
                     "bare INSERT+COMMIT /s", "ratio"],
                    [[_n(found["chats"]), _n(e["events"]), _n(e["events_per_s"]), _n(e["with_delivery_per_s"]),
                      _n(e["p50_ms"]), _n(e["p99_ms"]), _n(bare["rows_per_s"]), _n(found["ratio_to_bare"], 2)]])
    return lines


def scale_section(results: dict[str, Any]) -> list[str]:
    lines = ["## 3. Scale: an event with many cases stored", "",
             "One database grows through the sizes; closed cases are bulk-inserted with one SQL statement, then fresh "
             "chats go through the runner (test flow), a fixed number of users at a time, one chat after another. "
             "Bytes per case is the file's growth (after a WAL checkpoint) over the rows inserted.", ""]
    found = results.get("scale")
    problem = _error("scale", found)
    if problem or found is None:
        return [*lines, *(problem or [])]
    rows = [[_n(s["cases"]), _n(s["insert_s"]), _n(s["bytes_per_case"]), _mib(s["file_bytes"]), _n(s["events"]),
             _n(s["events_per_s"]), _n(s["p50_ms"]), _n(s["p99_ms"])] for s in found["sizes"]]
    lines += _table(["cases stored", "insert s", "bytes per case", "file", "events", "events/s", "p50 ms", "p99 ms"],
                    rows)
    lines += [f"{found['workers']} users at a time; p99 at the largest size ÷ p99 at the smallest: "
              f"{_n(found['p99_ratio_last_to_first'], 2)}.", ""]
    return lines


def timers_section(results: dict[str, Any]) -> list[str]:
    lines = ["## 5. Timers", "",
             "Detached timers due evenly over the spread; a runner starts with them pending and `run_timers` (the "
             "loop `recovery-bot run` uses) fires them with the real clock. Lateness = fired_at − due_at.", ""]
    found = results.get("timers")
    problem = _error("timers", found)
    if problem or found is None:
        return [*lines, *(problem or [])]
    lines += _table(["pending", "due over", "start-up", "fired", "late p50", "late p99", "late max"],
                    [[_n(found["pending"]), f"{_n(found['spread_s'], 0)} s", f"{found['startup_s']:.3f} s",
                      _n(found["fired"]), f"{_n(found['late_p50_ms'])} ms", f"{_n(found['late_p99_ms'])} ms",
                      f"{_n(found['late_max_ms'])} ms"]])
    return lines


def broadcast_section(results: dict[str, Any]) -> list[str]:
    lines = ["## 6. Broadcast", "",
             "The real `BroadcastService` on SQLite, users bulk-inserted, a transport that stamps each send and "
             "answers at once. Pacing off: a rate no run reaches, so the job's own costs set the pace. Pacing on: "
             "`BROADCAST_RATE`'s default. A run that had not ended by its window was cancelled (*finished: no*); "
             "its send rate is over the sends made. The most sends in any 1-second window is over a sliding "
             "window.", ""]
    found = results.get("broadcast")
    problem = _error("broadcast", found)
    if problem or found is None:
        return [*lines, *(problem or [])]
    rows = []
    paced_label = f"pacing on, rate {found['pacing_on']['rate']:g}/s"
    for key, label in (("pacing_off", "pacing off"), ("pacing_on", paced_label)):
        run = found[key]
        rows.append([label, _n(run["recipients"]), _n(run["sent"]), _n(run["finished"]), _n(run["seconds"], 2),
                     _n(run["start_s"], 3), _n(run["sends_per_s"]), _n(run["max_in_any_second"])])
    lines += _table(["run", "recipients", "sent", "finished", "seconds", "first send after s", "sends/s",
                     "most in any 1 s"], rows)
    off = found["pacing_off"]
    if off["sends_per_s"]:
        lines += [f"At that rate {off['recipients']:,} recipients take about "
                  f"{off['recipients'] / off['sends_per_s']:,.0f} s with pacing off.", ""]
    return lines


def profiles(results: dict[str, Any]) -> list[str]:
    lines = ["## Profiles (taken where a target was missed)", ""]
    any_profile = False
    for name, found in (results.get("e2e") or {}).items():
        spy = found.get("profile") if isinstance(found, dict) else None
        if not spy:
            continue
        any_profile = True
        lines += [f"### e2e {name}: py-spy on the desk process, Method 1 closed loop", ""]
        if not spy.get("available"):
            lines += [f"No profile: {spy.get('why')}", ""]
            continue
        lines += [f"{spy['samples']:,} samples (100 a second, every thread: aiosqlite's worker thread included) "
                  f"during a phase of {spy['phase']['updates_per_s']} updates/s, after the measured ones.", ""]
        lines += _table(["own time (leaf frame)", "% of samples"],
                        [[f"`{f}`", _n(p)] for f, p in spy["self_percent"]])
        lines += _table(["project function, including what it calls", "% of samples"],
                        [[f"`{f}`", _n(p)] for f, p in spy["inclusive_percent"]])
    engine_profile = (results.get("engine") or {}).get("profile")
    if engine_profile:
        any_profile = True
        lines += ["### engine: cProfile of the in-process run", ""]
        lines += _table(["own time", "s", "%", "calls"],
                        [[f"`{r['function']}`", _n(r["seconds"], 3), _n(r["percent"]), _n(r["calls"])]
                         for r in engine_profile["own"]])
        lines += _table(["own time in flows/", "s", "%", "calls"],
                        [[f"`{r['function']}`", _n(r["seconds"], 3), _n(r["percent"]), _n(r["calls"])]
                         for r in engine_profile["own_in_flows"]])
    if not any_profile:
        lines += ["None in this run (every target met, or `--no-profile`).", ""]
    return lines


def render(results: dict[str, Any]) -> str:
    lines = [*header(results), *targets(results), *e2e(results), *engine(results), *scale_section(results),
             *memory(results), *timers_section(results), *broadcast_section(results), *profiles(results)]
    return "\n".join(lines).rstrip() + "\n"
