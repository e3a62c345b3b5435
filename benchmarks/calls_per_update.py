"""Bot API calls per update: the real `recovery-bot run` process against the local Bot API test server.

Run: python benchmarks/calls_per_update.py [--framework ptb|aiogram] [--without-merging]

One person walks each path to its end: Method 1 with the codes shown in the chat (`CODE_DELIVERY=chat`), Method 1
with the codes sent by SMS and email (through a local SMTP server and SMS gateway), and Method 3. Every call the
bot makes to the server during the walk is counted, except its long polls (getUpdates), and divided by the
number of updates the person sent. `--without-merging` runs the same bot with `flows.render.merge_messages`
turned off (through a `sitecustomize` shim on the process's path), which is how texts went before issue 11.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import tempfile
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aiosmtpd.controller import Controller

from tests.support.botapi import BotApiServer
from tests.support.desk import ADA_TOTP, totp_now
from tests.support.e2e import ROOT, TOKEN, BotProcess, TgUser, prepare_database
from tests.support.servers import Mailbox, SmsGateway, free_port

NO_MERGING = "import flows.engine\nflows.engine.merge_messages = list  # each text its own message\n"
Walk = Callable[[TgUser], Awaitable[int]]


async def step(user: TgUser, act: Callable[[], object], fragment: str) -> int:
    act()
    await user.expect(fragment, timeout=60)
    return 1


async def method_one(user: TgUser, code: Callable[[str], Awaitable[str]]) -> int:
    updates = await step(user, lambda: user.send("/start"), "Welcome")
    updates += await step(user, lambda: user.tap("Switch to phone verification"), "Which email address")
    updates += await step(user, lambda: user.send("ada@example.com"), "Press Get Code")
    updates += await step(user, lambda: user.tap("Get Code"), "Send me the 6-digit code from the SMS")
    sms = await code("SMS")
    updates += await step(user, lambda: user.send(sms), "Now send me the 6-digit code from the email")
    email = await code("Email")
    updates += await step(user, lambda: user.send(email), "Press Submit")
    updates += await step(user, lambda: user.tap("Submit"), "Your account now uses phone verification")
    return updates


async def method_three(user: TgUser) -> int:
    updates = await step(user, lambda: user.send("/start"), "Welcome")
    updates += await step(user, lambda: user.tap("Reset with my backup key"), "Which email address")
    updates += await step(user, lambda: user.send("ada@example.com"), "install the authenticator app again")
    updates += await step(user, lambda: user.tap("The app is installed"), "Never send this key")
    updates += await step(user, lambda: user.tap("I added it"), "send me the 6-digit code")
    totp = totp_now(ADA_TOTP, datetime.now(UTC))
    updates += await step(user, lambda: user.send(totp), "The code matches")
    return updates


async def measure(server: BotApiServer, user: TgUser, walk: Walk) -> tuple[int, Counter[str]]:
    start = len(server.calls)
    user.mark = start
    updates = await walk(user)
    await user.idle()
    calls = Counter(c.method for c in server.calls[start:] if c.method != "getUpdates")
    return updates, calls


async def run_bot(server: BotApiServer, framework: str, folder: Path, merging: bool, **env: str) -> BotProcess:
    process = BotProcess(server, framework, folder, **env)
    if not merging:
        shim = folder / "shim"
        process.env["PYTHONPATH"] = f"{shim}:{ROOT}"
    await asyncio.to_thread(_prepare_folder, folder, merging)
    await prepare_database(process.database_url)
    await process.start()
    return process


def _prepare_folder(folder: Path, merging: bool) -> None:
    (folder / "shim").mkdir(parents=True)
    if not merging:
        (folder / "shim" / "sitecustomize.py").write_text(NO_MERGING)


async def main(framework: str, merging: bool) -> None:
    results: list[tuple[str, int, Counter[str]]] = []
    async with BotApiServer(token=TOKEN) as server:
        with tempfile.TemporaryDirectory() as folder:
            chat_bot = await run_bot(server, framework, Path(folder) / "chat", merging, CODE_DELIVERY="chat")
            try:
                user = TgUser(server, 301)

                async def shown(factor: str) -> str:
                    return user.last_code(factor)

                results.append(("Method 3", *await measure(server, TgUser(server, 303), method_three)))
                results.append(("Method 1, codes in the chat", *await measure(  # after Method 3: it drops the key
                    server, user, lambda u: method_one(u, shown))))
            finally:
                await chat_bot.stop()

            mailbox = Mailbox(port=free_port())
            smtp = Controller(mailbox, hostname="127.0.0.1", port=mailbox.port)
            smtp.start()
            gateway = SmsGateway()
            try:
                channel_bot = await run_bot(
                    server, framework, Path(folder) / "channels", merging, CODE_DELIVERY="", SMTP_HOST="127.0.0.1",
                    SMTP_PORT=str(mailbox.port), SMTP_FROM="desk@acme.test", SMTP_SECURITY="none",
                    SMS_WEBHOOK_URL=await gateway.start())
                try:
                    async def sent(factor: str) -> str:
                        for _ in range(600):
                            if factor == "SMS" and gateway.received:
                                found = re.search(r"code: (\d{6})", gateway.received[-1]["message"])
                            elif factor == "Email" and mailbox.received:
                                found = re.search(r"code is (\d{6})", mailbox.message(-1).get_content())
                            else:
                                found = None
                            if found:
                                return found.group(1)
                            await asyncio.sleep(0.1)
                        raise TimeoutError(f"no {factor} code arrived")

                    results.append(("Method 1, codes by SMS and email", *await measure(
                        server, TgUser(server, 302), lambda u: method_one(u, sent))))
                finally:
                    await channel_bot.stop()
            finally:
                await gateway.stop()
                smtp.stop()

    print(f"framework {framework}, texts {'merged' if merging else 'not merged'}")
    print(f"{'path':<34} {'updates':>7} {'calls':>5} {'calls/update':>12}  calls")
    for name, updates, calls in results:
        total = sum(calls.values())
        detail = ", ".join(f"{method} {count}" for method, count in sorted(calls.items()))
        print(f"{name:<34} {updates:>7} {total:>5} {total / updates:>12.2f}  {detail}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--framework", choices=("ptb", "aiogram"), default="ptb")
    parser.add_argument("--without-merging", action="store_true", help="each text its own message, as before")
    arguments = parser.parse_args()
    asyncio.run(main(arguments.framework, not arguments.without_merging))
