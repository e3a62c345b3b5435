"""`python -m benchmarks` (or `benchmarks/run`): measure every section and write RESULTS.md and RESULTS.json.

Sections: e2e (with memory), postgres (e2e on PostgreSQL), engine, scale, timers, broadcast. See
benchmarks/README.md for what each figure means.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import broadcast, engine_throughput, scale, timers
from benchmarks.common import machine
from benchmarks.e2e import INBOUND_LIMIT, E2eSizes, run_framework
from benchmarks.report import render
from benchmarks.targets import checks_for

SECTIONS = ("e2e", "postgres", "engine", "scale", "timers", "broadcast")
FRAMEWORKS = ("ptb", "aiogram")


def sizes(quick: bool) -> dict[str, Any]:
    from bot.config import Settings

    rate = float(Settings.model_fields["broadcast_rate"].default)
    if quick:
        return {"e2e": E2eSizes.quick(), "engine_chats": 300, "bare_seconds": 1.0, "scale": [1_000, 10_000, 20_000],
                "scale_chats": 100, "timers": 2_000, "timers_spread": 3.0, "recipients": 2_000,
                "unpaced_seconds": 2.0, "paced_seconds": 3.0, "rate": rate}
    return {"e2e": E2eSizes(), "engine_chats": 5_000, "bare_seconds": 3.0, "scale": [1_000, 100_000, 1_000_000],
            "scale_chats": 500, "timers": 100_000, "timers_spread": 60.0, "recipients": 100_000,
            "unpaced_seconds": 20.0, "paced_seconds": 12.0, "rate": rate}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


async def section(name: str, work: Callable[[], Any]) -> dict[str, Any]:
    began = time.perf_counter()
    log(f"{name}: starting")
    try:
        result = await work()
    except Exception as error:  # one broken section must not lose the others' figures
        traceback.print_exc()
        result = {"error": f"{type(error).__name__}: {error}"}
    result["section_seconds"] = round(time.perf_counter() - began, 1)
    log(f"{name}: done in {result['section_seconds']} s")
    return result


async def main(args: argparse.Namespace) -> dict[str, Any]:
    size = sizes(args.quick)
    wanted = args.only.split(",") if args.only else list(SECTIONS)
    frameworks = args.frameworks.split(",")
    results: dict[str, Any] = {"machine": machine(), "quick": args.quick, "sections": wanted,
                               "frameworks": frameworks, "inbound_limit": INBOUND_LIMIT,
                               "command": " ".join(["python -m benchmarks", *sys.argv[1:]])}
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="recovery-bench-") as scratch:
        if "e2e" in wanted:
            results["e2e"] = {}
            e2e_sizes: E2eSizes = size["e2e"]
            results["e2e_sizes"] = e2e_sizes.__dict__
            for framework in frameworks:
                folder = Path(scratch) / framework

                def run(framework: str = framework, folder: Path = folder) -> Any:
                    return run_framework(framework, folder, e2e_sizes, not args.no_profile, log)

                results["e2e"][framework] = await section(f"e2e {framework}", run)
        if "postgres" in wanted:
            results["e2e_postgres"] = await on_postgres(Path(scratch) / "postgres", frameworks, size["e2e"], log)
        if "engine" in wanted:
            async def engine() -> dict[str, Any]:
                found = await engine_throughput.measure(size["engine_chats"], size["bare_seconds"])
                if not args.no_profile and (found["engine"]["events_per_s"] < 5000 or
                                            (found["ratio_to_bare"] or 0) < 0.8):
                    found["profile"] = await asyncio.to_thread(engine_throughput.profile,
                                                               min(size["engine_chats"], 500))
                return found
            results["engine"] = await section("engine", engine)
        if "scale" in wanted:
            results["scale"] = await section("scale", lambda: scale.measure(size["scale"], size["scale_chats"]))
        if "timers" in wanted:
            results["timers"] = await section("timers", lambda: timers.measure(size["timers"], size["timers_spread"]))
        if "broadcast" in wanted:
            results["broadcast"] = await section("broadcast", lambda: broadcast.measure(
                size["recipients"], size["rate"], size["paced_seconds"], size["unpaced_seconds"]))
    results["total_seconds"] = round(time.perf_counter() - began, 1)
    results["machine"]["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    results["targets"] = [check.as_dict() for check in checks_for(results)]
    return results


async def on_postgres(folder: Path, frameworks: list[str], e2e_sizes: E2eSizes,
                      log: Callable[[str], None]) -> dict[str, Any]:
    """Section 1 again with the desk on a PostgreSQL server of its own (durable: fsync on), one empty database per
    framework. The server's folder is under /tmp itself, as the tests' is: its own user must be able to reach it."""
    from tests.support.postgres import PostgresServer

    server_folder = Path(tempfile.mkdtemp(prefix="recovery-bench-pg-"))
    os.chmod(server_folder, 0o755)
    server = PostgresServer(server_folder, durable=True)
    found: dict[str, Any] = {}
    try:
        try:
            await asyncio.to_thread(server.start)
        except Exception as error:  # no PostgreSQL here: the other sections' figures still count
            return {framework: {"error": f"PostgreSQL did not start: {error}"} for framework in frameworks}
        for framework in frameworks:
            url = server.url(server.new_database())

            def run(framework: str = framework, url: str = url) -> Any:
                return run_framework(framework, folder / framework, e2e_sizes, False, log, database_url=url)

            found[framework] = await section(f"e2e {framework} on PostgreSQL", run)
    finally:
        await asyncio.to_thread(server.stop)
        shutil.rmtree(server_folder, ignore_errors=True)
    return found


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke test, figures not comparable")
    parser.add_argument("--only", help=f"comma-separated sections among {', '.join(SECTIONS)}")
    parser.add_argument("--frameworks", default=",".join(FRAMEWORKS), help="comma-separated: ptb, aiogram")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent,
                        help="folder for RESULTS.md and RESULTS.json (default: benchmarks/)")
    parser.add_argument("--no-profile", action="store_true", help="skip the profiles taken when a target is missed")
    args = parser.parse_args(argv)
    for name in (args.only or "").split(","):
        if name and name not in SECTIONS:
            parser.error(f"unknown section {name!r}; choose among {', '.join(SECTIONS)}")
    for name in args.frameworks.split(","):
        if name not in FRAMEWORKS:
            parser.error(f"unknown framework {name!r}; choose among {', '.join(FRAMEWORKS)}")
    return args


if __name__ == "__main__":
    arguments = parse()
    found = asyncio.run(main(arguments))
    arguments.out.mkdir(parents=True, exist_ok=True)
    (arguments.out / "RESULTS.json").write_text(json.dumps(found, indent=1, default=str) + "\n")
    (arguments.out / "RESULTS.md").write_text(render(found))
    log(f"wrote {arguments.out / 'RESULTS.md'} and RESULTS.json in {found['total_seconds']} s")
