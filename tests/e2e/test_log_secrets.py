"""With LOG_LEVEL=DEBUG, the real `recovery-bot run` writes no secret to its log, on either framework.

One process per framework walks the three kinds of secret a recovery handles — a code sent to the chat
(Method 1), a TOTP code typed (Method 3), and Method 2 up to a staff approval and the new authenticator secret —
then stops; the log must hold none of them, nor the token, the user's answers or the photos' file ids.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

from tests.e2e.test_telegram_e2e import walk_method_two_to_country
from tests.support.botapi import BotApiServer
from tests.support.desk import BEN_TOTP, totp_now
from tests.support.e2e import (
    ADMIN,
    TOKEN,
    BotProcess,
    TgUser,
    prepare_database,
    walk_backup_key_to_the_code,
    walk_phone_switch_to_the_codes,
)


async def method_one(user: TgUser) -> list[str]:
    await walk_phone_switch_to_the_codes(user)
    codes = [user.last_code("SMS"), user.last_code("Email")]
    user.send(codes[0])
    await user.expect("from the email")
    user.send(codes[1])
    await user.expect("Press Submit")
    user.tap("Submit")
    await user.expect("Your account now uses phone verification")
    return codes


async def method_three(user: TgUser) -> list[str]:
    await walk_backup_key_to_the_code(user, "ben@example.com")
    code = totp_now(BEN_TOTP, datetime.now(UTC))
    user.send(code)
    await user.expect("The code matches")
    return [code]


async def approval_and_enrolment(admin: TgUser, user: TgUser) -> list[str]:
    """Method 2 to review, approved by staff, and the new key confirmed; returns the secrets that went by."""
    admin.send("/start")
    await admin.expect("Welcome")
    await walk_method_two_to_country(user)
    secrets = [user.last_code("SMS"), user.last_code("Email")]
    user.send("france")
    await user.expect("Which document")
    user.tap("Passport")
    await user.expect("front")
    secrets += [photo["file_id"] for photo in user.send_photo()["message"]["photo"]]
    await user.expect("selfie")
    secrets += [photo["file_id"] for photo in user.send_photo()["message"]["photo"]]
    await user.expect("Everything is ready.")
    user.tap("Submit for review")
    admin.mark = len(user.server.calls)
    await user.expect("Your request is now with our staff")
    await admin.expect("Review case")
    admin.tap("✅ Approve")
    await admin.expect("approved, withdrawals locked")
    key_text = await user.expect("Or type this key")
    grouped = key_text.split("Or type this key: ", 1)[1].split("\n", 1)[0].strip()
    secret = grouped.replace(" ", "")
    user.mark = len(user.server.calls)
    code = totp_now(secret, datetime.now(UTC))
    user.send(code)
    await user.expect("Your new authenticator works.")
    return [*secrets, grouped, secret, code]


def occurrences(log: str, secret: str) -> list[str]:
    """Where `secret` appears in `log` as a whole word (a code inside a longer id is no hit), with context."""
    pattern = rf"(?<![A-Za-z0-9]){re.escape(secret)}(?![A-Za-z0-9])"
    return [log[max(0, m.start() - 80): m.end() + 40] for m in re.finditer(pattern, log, re.IGNORECASE)]


async def test_a_debug_log_holds_no_secret(server: BotApiServer, framework: str, tmp_path: Path) -> None:
    process = BotProcess(server, framework, tmp_path, LOG_LEVEL="DEBUG", CODE_DELIVERY="chat")
    await prepare_database(process.database_url)
    await process.start()
    try:
        secrets = await approval_and_enrolment(TgUser(server, ADMIN), TgUser(server, 311))  # Ada's new key first,
        secrets += await method_one(TgUser(server, 301))  # then Ada switches to phone codes
        secrets += await method_three(TgUser(server, 303))
    finally:
        assert await process.stop() == 0, process.log.read_text()[-3000:]
    log = process.log.read_text()
    assert "DEBUG" in log  # the level took effect: this is a debug log
    typed = ["ada@example.com", "ben@example.com", "rex"]  # the emails and the security answer
    words = [TOKEN, TOKEN.split(":", 1)[1], *typed, *secrets]
    leaks = {word: found[:3] for word in words if (found := occurrences(log, word))}
    assert not leaks, leaks
