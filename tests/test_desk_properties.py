"""Random conversations with the real desk keep its security promises.

A hypothesis state machine plays two users and an admin against the real desk (the menu, the three methods and
staff review) over a real, migrated SQLite file per example and a fake clock: random text, commands, taps on
the buttons on screen, stale, forged and malformed button data, photos and documents, time passing, timers
firing and restarts — mixed with a "helpful user" who moves their case forward, so deep steps are reached too.

After every action it checks what the desk promises whatever the wording or the order of its steps:

- no event reached the internal-error path;
- every active case is at a step of its flow, and no chat has two active cases;
- a case is marked phone/email/answer verified only if its user typed the code shown for it (or the answer);
  a case completes only with such proof (or a valid authenticator code); an account's 2FA changes only by an
  admin's approval, a proven Method 1 submit or the enrolment after an approval; a withdrawal lock never
  shrinks;
- a press on a button that is not live changes no case;
- a code shown in the chat appears in no other message, the accounts' TOTP secrets in none at all, and a
  delivered reply that carried a code or key no longer holds it in the outbox.

Run deeper locally with DESK_PROPERTIES=deep (more examples, random seeds).
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import logging
import os
import random
import re
import secrets
import shutil
import sqlite3
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test

from flows.accounts_csv import import_accounts
from flows.clock import FakeClock
from flows.desk import all_flows, build_engine
from flows.directory import normalize_answer
from flows.events import FileInfo
from flows.model import Accepts
from flows.otp import normalize_code
from flows.replies import Reply
from flows.services import FlowSettings, ServiceFactory
from flows.store.database import SqlStore, open_database
from flows.texts import Text, plain_text
from tests.support.chat import Bot, Chat
from tests.support.desk import ACCOUNTS_CSV, ADA_TOTP, BEN_TOTP, SECRET_KEY, totp_now

USERS = (41, 42)
ADMIN = 900
EVERYONE = (*USERS, ADMIN)
ADA, BEN, NOBODY = "ada@example.com", "ben@example.com", "nobody@example.com"
ADA_ANSWER = "Rex"
ACTIVE = ("open", "review")
FACTORS = {"SMS": "phone", "Email": "email"}
LIMIT = 20 * 1024 * 1024

DESK = FlowSettings(service_name="Acme", secret_key=SECRET_KEY, admin_ids=(ADMIN, 901),
                    code_channels={"phone": "chat", "email": "chat"})
FACTORY = ServiceFactory(DESK)
ENGINE = build_engine(DESK)
FLOWS = {flow.id: flow for flow in all_flows()}
INTERNAL_ERROR = plain_text(ENGINE.say(Text("engine.internal_error"), "en"))

CHAT_CODE = re.compile(r"(SMS|Email) to \S+: (\d{6})")
SHOWN_KEY = re.compile(r"<code>([A-Z2-7 ]{16,})</code>")
USER_DATA = re.compile(r"^([A-Za-z0-9_-]{12}):(\d{1,9}):([a-z][a-z0-9_]{0,23})$")
STAFF_DATA = re.compile(r"^r:([A-Za-z0-9_-]{12}):(\d{1,4}):([a-z_]{1,16})$")
FIXED_SECRETS = (ADA_TOTP, BEN_TOTP)

PROFILES = {
    "ci": settings(max_examples=30, stateful_step_count=15, deadline=None, derandomize=True, database=None,
                   suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large], print_blob=True),
    "deep": settings(max_examples=300, stateful_step_count=50, deadline=None, database=None,
                     suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large], print_blob=True),
}
PROFILE = os.environ.get("DESK_PROPERTIES", "ci")


# --- what the desk stores, read straight from the file -----------------------------------------------------


@dataclass(frozen=True)
class CaseView:
    id: str
    chat_id: int
    flow: str
    step: str
    status: str
    turn: int
    data: dict[str, Any]
    updated_at: str

    @property
    def account_id(self) -> int | None:
        value = self.data.get("account_id")
        return int(value) if value is not None else None


@dataclass(frozen=True)
class AccountState:
    two_factor: str
    totp_secret_enc: str | None
    withdrawals_locked_until: str | None


class Store:
    """Plain sqlite3 reads of the example's database file (fast; WAL lets them run beside the desk's writer)."""

    def __init__(self, path: Path) -> None:
        self.conn = sqlite3.connect(path, isolation_level=None)

    def cases(self) -> dict[str, CaseView]:
        rows = self.conn.execute("SELECT id, chat_id, flow, step, status, turn, data, updated_at FROM cases")
        return {row[0]: CaseView(row[0], row[1], row[2], row[3], row[4], row[5], json.loads(row[6]), row[7])
                for row in rows.fetchall()}

    def accounts(self) -> dict[int, AccountState]:
        rows = self.conn.execute("SELECT id, two_factor, totp_secret_enc, withdrawals_locked_until FROM accounts")
        return {row[0]: AccountState(row[1], row[2], row[3]) for row in rows.fetchall()}

    def account_ids(self) -> dict[str, int]:
        return {email: id_ for id_, email in self.conn.execute("SELECT id, email FROM accounts").fetchall()}

    def outbox_after(self, row_id: int) -> list[tuple[int, str, str | None]]:
        query = "SELECT id, payload, delivered_at FROM outbox WHERE id > ? ORDER BY id"
        return list(self.conn.execute(query, (row_id,)).fetchall())

    def close(self) -> None:
        self.conn.close()


def active_case(cases: dict[str, CaseView], chat_id: int) -> CaseView | None:
    return next((c for c in cases.values() if c.chat_id == chat_id and c.status in ACTIVE), None)


# --- what the model remembers --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Typed:
    """A text a user typed while a case was open: as typed, as a code, and whether it was a valid TOTP then."""

    text: str
    code: str
    totp_ok: bool


@dataclass
class Model:
    codes: dict[str, list[tuple[str, str]]] = field(default_factory=lambda: defaultdict(list))
    typed: dict[str, list[Typed]] = field(default_factory=lambda: defaultdict(list))
    code_origin: dict[str, set[int]] = field(default_factory=lambda: defaultdict(set))  # code -> its deliveries
    key_origin: dict[str, int] = field(default_factory=dict)  # enrolment key -> index of its delivery
    enrol_keys: dict[str, str] = field(default_factory=dict)  # case id -> the key shown for it
    approved: set[str] = field(default_factory=set)
    buttons: dict[str, int | None] = field(default_factory=dict)  # every button data ever shown -> its message
    tried: Counter[tuple[str, str, str]] = field(default_factory=Counter)  # (flow, step, choice) the helper pressed

    def proven(self, case: CaseView) -> bool:
        """Codes were shown for the case and every factor shown is marked verified."""
        shown = {factor for factor, _ in self.codes.get(case.id, [])}
        return bool(shown) and all(case.data.get(f"{factor}_verified") is True for factor in shown)

    def earned(self, case: CaseView, factor: str) -> bool:
        """The case's user typed a code shown for this case and factor."""
        shown = {code for f, code in self.codes.get(case.id, []) if f == factor}
        return any(t.code in shown for t in self.typed.get(case.id, []))


def reply_text(reply: Reply) -> str:
    """Everything a person could read in a reply: text, caption, email subject and body, button labels."""
    parts = [value for name in ("text", "caption", "subject", "body") if isinstance(value := getattr(reply, name,
                                                                                                      None), str)]
    parts += [button.label for row in getattr(reply, "buttons", ()) for button in row]
    return plain_text("\n".join(parts))


def compact(text: str) -> str:
    return re.sub(r"[\s-]", "", text).upper()


def has_code(text: str, code: str) -> bool:
    return re.search(rf"(?<!\d){code}(?!\d)", text) is not None


# --- strategies ----------------------------------------------------------------------------------------------

EMAILS = st.sampled_from([ADA, BEN, NOBODY, "Ada@Example.com ", " BEN@example.COM", "ada@example.org", "a@b",
                          "@", "ada@", "x" * 70 + "@example.com", "ada@example.com\nben@example.com"])
KEYS = st.sampled_from([ADA_TOTP, BEN_TOTP, ADA_TOTP.lower(), " ".join(BEN_TOTP[i:i + 4] for i in range(0, 16, 4)),
                        "JBSW-Y3DP-EHPK-3PXP"]) | st.from_regex(r"[A-Z2-7]{16,32}", fullmatch=True)
CODES = st.from_regex(r"\d{6}", fullmatch=True) | st.sampled_from(["123 456", "１２３４５６", "000000", "12345",
                                                                      "1234567", "12 34 56"])
WORDS = st.sampled_from([ADA_ANSWER, " rex ", "REX", "Rover", "germany", "land", "France", "Atlantis",
                         "Hunter2!pass", "my password is Secret123!", "help", "yes"])
ODD = st.sampled_from(["", " ", "\n", "\u200b", "\t\t", "<b>bold</b>", "&amp;", "{code}", "%s", "x" * 5000,
                       "é" * 4097, "🙂" * 300, "\x00"]) | st.text(max_size=40)
USER_TEXT = EMAILS | KEYS | CODES | WORDS | ODD
COMMAND_NAMES = st.sampled_from(["start", "cancel", "status", "help", "queue", "case", "reject", "audit", "stats",
                                 "broadcast", "broadcast_cancel", "frobnicate", "START", "start@acme_bot", ""])
SAFE_ARGS = st.sampled_from(["", " ", "hello", "@open hi", "@lang:en hi", "@lang:xx", "<i>x</i>", "x" * 600]) \
    | st.text(alphabet=st.characters(exclude_categories=["Cs", "Nd"]), max_size=30)
FILES = st.builds(
    lambda kind, size, mime, n: FileInfo(f"file-{n}", f"unique-{n}", kind, size, mime),
    st.sampled_from(["photo", "document"]),
    st.sampled_from([None, 0, 1, 150_000, LIMIT - 1, LIMIT, LIMIT + 1, 25 * 1024 * 1024, 2**40]),
    st.sampled_from([None, "image/jpeg", "image/png", "application/pdf", "text/plain", "image/svg+xml", ""]),
    st.integers(0, 10**6),
)
GOOD_PHOTO = st.builds(lambda n: FileInfo(f"good-{n}", f"good-u{n}", "photo", 150_000), st.integers(0, 10**6))
SECONDS = st.sampled_from([1, 30, 59, 61, 299, 301, 900, 1500, 1799, 1801, 3601, 86_401, 172_801, 2_592_001]) \
    | st.integers(1, 3 * 3600)  # mostly seconds to hours; now and then a day or a month
STAFF_ACTIONS = st.sampled_from(["approve", "reject", "more", "rj_docs", "rj_mismatch", "rj_fraud", "rj_type",
                                 "rj_bogus", "APPROVE", "", "approve:x", "approve "])
ROUNDS = st.sampled_from(["0", "1", "01", "2", "9999", "99999", "-1", "x", ""])
IDS = st.from_regex(r"[A-Za-z0-9_-]{12}", fullmatch=True)
RAW_DATA = st.text(max_size=64) | st.binary(max_size=64).map(lambda raw: raw.decode("latin-1")) | st.sampled_from(
    ["r:", "r::::", "b:", "b:1:send", "b:99:send", "b:1:all", "b:1:cancel", ":", "resume", "::", "r:x:1:approve"])
FORGERIES = ("raw", "staff", "near", "user")
CHOICES = sorted({c.id for f in FLOWS.values() for s in f.steps for c in s.choices} | {"resume", "ADMIN"})
TYPE_RATHER = st.sampled_from([True, True, True, False])  # the helpful user mostly types what is asked


# --- the machine ---------------------------------------------------------------------------------------------


class Entropy:
    """The desk's randomness (codes, case ids, new authenticator keys) from a seed drawn by each example, so a
    failing example replays and shrinks. Anything else is left to the real `secrets` module."""

    def __init__(self) -> None:
        self.rng = random.Random(0)

    def randbelow(self, n: int) -> int:
        return self.rng.randrange(n)

    def token_urlsafe(self, nbytes: int) -> str:
        return base64.urlsafe_b64encode(self.rng.randbytes(nbytes)).decode().rstrip("=")

    def base32_secret(self) -> str:
        return "".join(self.rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567") for _ in range(32))

    def __getattr__(self, name: str) -> Any:
        return getattr(secrets, name)


ENTROPY = Entropy()


Act = Callable[[], Awaitable[object]]


class ErrorLog(logging.Handler):
    """Keeps every error the desk logs (the internal-error path logs `event ... failed` with the exception)."""

    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


class DeskMachine(RuleBasedStateMachine):
    template: ClassVar[Path]
    workdir: ClassVar[Path]
    examples: ClassVar[Iterator[int]] = itertools.count()

    def __init__(self) -> None:
        super().__init__()
        self.path = self.workdir / f"example-{next(self.examples)}.db"
        shutil.copy(self.template, self.path)
        self.loop = asyncio.Runner()
        self.errors = ErrorLog()
        logging.getLogger("flows").addHandler(self.errors)
        self.clock = FakeClock()
        self.db = open_database(f"sqlite+aiosqlite:///{self.path}")
        self.bot = Bot(self.db, ENGINE, self.clock, FACTORY)
        self.loop.run(self.bot.start())
        self.chats: dict[int, Chat] = {uid: self.bot.chat(user_id=uid) for uid in EVERYONE}
        self.store = Store(self.path)
        self.accounts_by_email = self.store.account_ids()
        self.model = Model()
        self.log_seen = 0
        self.outbox_checked = 0

    def teardown(self) -> None:
        try:
            self.loop.run(self.bot.stop())
            self.loop.run(self.db.dispose())
        finally:
            self.loop.close()
            self.store.close()
            logging.getLogger("flows").removeHandler(self.errors)
            for suffix in ("", "-wal", "-shm"):
                Path(f"{self.path}{suffix}").unlink(missing_ok=True)

    @initialize(seed=st.integers(0, 2**32 - 1), moves=st.integers(0, 14), data=st.data())
    def a_case_well_under_way(self, seed: int, moves: int, data: st.DataObject) -> None:
        """Seed the desk's randomness, then let the first user get some way into a case (deep steps are where
        the promises matter, and random actions alone seldom get there)."""
        ENTROPY.rng.seed(seed)
        for _ in range(moves):
            self.next_move(USERS[0], data)

    # --- acting and watching ----------------------------------------------------------------------------

    def act(self, who: int | None, kind: str, payload: str, run: Act) -> None:
        """Do one thing to the desk, then check what that one thing may and may not have changed."""
        cases, accounts = self.store.cases(), self.store.accounts()
        case = active_case(cases, who) if who is not None else None
        allowed = self.allowed_changes(who, kind, payload, cases, case)
        live = kind != "press" or self.could_be_live(who, payload, cases, case)
        if kind == "text" and case is not None and case.status == "open":
            self.model.typed[case.id].append(self.typed(payload, case))
        self.loop.run(run())
        after = self.store.cases()
        self.watch_log(after)
        self.remember_buttons()
        self.check_accounts(accounts, self.store.accounts(), allowed)
        self.note_approvals(allowed, after)
        if not live:
            assert after == cases, f"a press on dead button data {payload!r} by {who} changed a case"

    def typed(self, text: str, case: CaseView) -> Typed:
        code = normalize_code(text)
        return Typed(text, code, len(code) == 6 and self.is_current_totp(code, case.account_id))

    def is_current_totp(self, code: str, account_id: int | None) -> bool:
        encrypted = self.store.accounts()[account_id].totp_secret_enc if account_id is not None else None
        if encrypted is None:
            return False
        secret = FACTORY.box.decrypt(encrypted)
        return code in {totp_now(secret, self.clock.now(), steps) for steps in (-1, 0, 1)}

    def allowed_changes(self, who: int | None, kind: str, payload: str, cases: dict[str, CaseView],
                        case: CaseView | None) -> dict[int, str]:
        """The accounts whose 2FA this action may legitimately change, and why."""
        allowed: dict[int, str] = {}
        staff = STAFF_DATA.match(payload) if kind == "press" else None
        if who == ADMIN and staff is not None and staff.group(3) == "approve":
            target = cases.get(staff.group(1))
            if target is not None and target.status == "review" and target.account_id is not None:
                allowed[target.account_id] = f"approve:{target.id}"
        if case is not None and case.account_id is not None:
            if kind == "press" and self.model.proven(case):
                allowed[case.account_id] = "proven"
            if kind == "text" and case.id in self.model.approved:
                allowed[case.account_id] = "enrol"
        return allowed

    def could_be_live(self, who: int | None, data: str, cases: dict[str, CaseView], case: CaseView | None) -> bool:
        """Whether a press may act: a staff card of a waiting case pressed by the admin, or a button of the
        presser's own case, at its current turn, for a choice its step has."""
        staff = STAFF_DATA.match(data)
        if staff is not None:
            target = cases.get(staff.group(1))
            return who == ADMIN and target is not None and target.status == "review"
        mine = USER_DATA.match(data)
        if mine is None or case is None or case.status != "open":
            return False
        case_id, turn, choice = mine.groups()
        choices = {c.id for c in FLOWS[case.flow].step(case.step).choices} | {"resume"}
        return case_id == case.id and int(turn) == case.turn and choice in choices

    def check_accounts(self, before: dict[int, AccountState], after: dict[int, AccountState],
                       allowed: dict[int, str]) -> None:
        for account_id, old in before.items():
            new = after[account_id]
            old_lock, new_lock = old.withdrawals_locked_until, new.withdrawals_locked_until
            assert old_lock is None or (new_lock is not None and new_lock >= old_lock), "a withdrawal lock shrank"
            if (old.two_factor, old.totp_secret_enc, old_lock) == (new.two_factor, new.totp_secret_enc, new_lock):
                continue
            why = allowed.get(account_id)
            assert why is not None, f"account {account_id}'s 2FA changed without a legitimate path: {old} -> {new}"
            assert why.startswith("approve:") or why == "proven" or new_lock == old_lock, \
                f"withdrawals lock changed by {why}"
            if why == "proven" and old.two_factor != new.two_factor:  # Method 1's switch always locks withdrawals
                assert new_lock is not None and new_lock != old_lock, "2FA switched without a withdrawal lock"

    def note_approvals(self, allowed: dict[int, str], after: dict[str, CaseView]) -> None:
        """An admin's approve press that took the case out of review approved it."""
        for why in allowed.values():
            case_id = why.removeprefix("approve:")
            if why.startswith("approve:") and after[case_id].status != "review":
                self.model.approved.add(case_id)

    def watch_log(self, cases: dict[str, CaseView]) -> None:
        """Learn the codes and keys delivered since the last look, and check that nothing else shows them."""
        log = self.bot.transport.log
        for index in range(self.log_seen, len(log)):
            reply = log[index]
            shown = reply_text(reply)
            assert INTERNAL_ERROR not in shown, f"internal error shown in chat {reply.chat_id}"
            self.learn_secrets(index, reply, shown, cases)
            self.check_no_leak(index, shown)
        self.log_seen = len(log)

    def learn_secrets(self, index: int, reply: Reply, shown: str, cases: dict[str, CaseView]) -> None:
        case = active_case(cases, reply.chat_id)
        for label, code in CHAT_CODE.findall(shown):
            self.model.code_origin[code].add(index)  # a set: two random codes may happen to be equal
            assert case is not None, "a code was shown to a chat with no case"
            self.model.codes[case.id].append((FACTORS[label], code))
        raw = getattr(reply, "text", "")
        if getattr(reply, "sensitive", False) and isinstance(raw, str):
            for key in SHOWN_KEY.findall(raw):
                self.model.key_origin[compact(key)] = index
                if case is not None:
                    self.model.enrol_keys[case.id] = compact(key)

    def check_no_leak(self, index: int, shown: str) -> None:
        flat = compact(shown)
        for secret in FIXED_SECRETS:
            assert secret not in flat, "an account's TOTP secret was shown"
        for code, origins in self.model.code_origin.items():
            assert index in origins or not has_code(shown, code), f"code {code} shown outside its own message"
        for key, origin in self.model.key_origin.items():
            assert origin == index or key not in flat, "an enrolment key was shown outside its own message"

    def remember_buttons(self) -> None:
        for chat in self.bot.transport.chats.values():
            for message in chat:
                for row in message.buttons:
                    for button in row:
                        self.model.buttons.setdefault(button.data, message.message_id)

    # --- invariants -------------------------------------------------------------------------------------

    @invariant()
    def nothing_failed(self) -> None:
        failures = [f"{r.name}: {r.getMessage()}" for r in self.errors.records]
        assert not failures, failures

    @invariant()
    def active_cases_are_at_real_steps(self) -> None:
        chats: set[int] = set()
        for case in self.store.cases().values():
            if case.status in ACTIVE:
                assert case.flow in FLOWS and FLOWS[case.flow].has(case.step), f"{case.flow}:{case.step}"
                assert case.chat_id not in chats, f"chat {case.chat_id} has two active cases"
                chats.add(case.chat_id)

    @invariant()
    def proofs_were_earned(self) -> None:
        ada = self.accounts_by_email[ADA]
        for case in self.store.cases().values():
            for factor in ("phone", "email"):
                if case.data.get(f"{factor}_verified") is True:
                    assert self.model.earned(case, factor), f"case {case.id}: {factor} verified unearned"
            if case.data.get("answer_verified") is True:
                right = normalize_answer(ADA_ANSWER)
                typed = self.model.typed.get(case.id, [])
                assert case.account_id == ada and any(normalize_answer(t.text) == right for t in typed), case
            if case.status == "completed":
                by_totp = any(t.totp_ok for t in self.model.typed.get(case.id, []))
                assert case.account_id is not None and (self.model.proven(case) or by_totp), f"unproven {case}"
            if case.status == "approved":
                assert case.id in self.model.approved, f"case {case.id} approved without an admin"

    @invariant()
    def delivered_secrets_left_the_outbox(self) -> None:
        for row_id, payload, delivered_at in self.store.outbox_after(self.outbox_checked):
            flat = compact(payload)
            assert not any(secret in flat for secret in FIXED_SECRETS), "a TOTP secret is in the outbox"
            if delivered_at is None:
                break
            body = json.loads(payload)
            readable = " ".join(str(body.get(name, "")) for name in ("text", "caption", "subject", "body"))
            assert not any(has_code(readable, code) for code in self.model.code_origin), f"outbox {row_id}: code"
            assert not any(key in compact(readable) for key in self.model.key_origin), f"outbox {row_id}: key"
            assert not (body.get("sensitive") and str(body.get("png_base64", "")).startswith("iVBOR")), row_id
            self.outbox_checked = row_id

    # --- rules: what people do --------------------------------------------------------------------------

    def send(self, who: int, text: str) -> None:
        chat = self.chats[who]
        self.act(who, "command" if text.startswith("/") else "text", text, lambda: chat.send(text))

    def press(self, who: int, data: str, message_id: int | None) -> None:
        chat = self.chats[who]
        self.act(who, "press", data, lambda: chat.press(data, message_id))

    @rule(who=st.sampled_from(EVERYONE), text=USER_TEXT, shown_code=st.booleans(), data=st.data())
    def type_text(self, who: int, text: str, shown_code: bool, data: st.DataObject) -> None:
        case = active_case(self.store.cases(), who)
        codes = [code for _, code in self.model.codes.get(case.id, [])] if case is not None else []
        if shown_code and codes:
            text = data.draw(st.sampled_from(codes[-2:]), label="shown code")
        self.send(who, text)

    @rule(who=st.sampled_from(EVERYONE), name=COMMAND_NAMES, args=SAFE_ARGS, data=st.data())
    def command(self, who: int, name: str, args: str, data: st.DataObject) -> None:
        if name in ("case", "reject") and data.draw(st.booleans(), label="real case"):
            ids = sorted(self.store.cases()) or ["nonexistent1"]
            args = f"{data.draw(st.sampled_from(ids), label='case id')} {args}".rstrip()
        self.send(who, f"/{name} {args}" if args else f"/{name}")

    @rule(who=st.sampled_from(EVERYONE), data=st.data())
    def tap_a_shown_button(self, who: int, data: st.DataObject) -> None:
        shown = [(m.message_id, b.data) for m in self.chats[who].messages for row in m.buttons for b in row]
        if shown:
            message_id, button = data.draw(st.sampled_from(shown), label="button")
            self.press(who, button, message_id)

    @rule(who=st.sampled_from(EVERYONE), data=st.data())
    def replay_old_button(self, who: int, data: st.DataObject) -> None:
        if self.model.buttons:
            button, message_id = data.draw(st.sampled_from(sorted(self.model.buttons.items(), key=str)))
            self.press(who, button, message_id)

    @rule(who=st.sampled_from(EVERYONE), kind=st.sampled_from(FORGERIES), message_id=st.none() | st.integers(0, 2000),
          data=st.data())
    def forge_button(self, who: int, kind: str, message_id: int | None, data: st.DataObject) -> None:
        self.press(who, self.forge(kind, data), message_id)

    def forge(self, kind: str, data: st.DataObject) -> str:
        """Staff data with bad parts, near misses of real button data, or anything at all."""
        if kind == "raw":
            return data.draw(RAW_DATA, label="raw data")
        case_id = data.draw(st.sampled_from(sorted(self.store.cases()) or ["AAAAAAAAAAAA"]) | IDS, label="case id")
        if kind == "staff":
            return f"r:{case_id}:{data.draw(ROUNDS, label='round')}:{data.draw(STAFF_ACTIONS, label='action')}"
        old = sorted(button for button in self.model.buttons if USER_DATA.match(button))
        if kind == "near" and old:
            return data.draw(st.sampled_from(mutations(data.draw(st.sampled_from(old), label="real data"))))
        turn = data.draw(st.integers(0, 60) | st.just(10**9 - 1), label="turn")
        return f"{case_id}:{turn}:{data.draw(st.sampled_from(CHOICES), label='choice')}"

    @rule(who=st.sampled_from(EVERYONE), file=FILES | GOOD_PHOTO)
    def send_a_file(self, who: int, file: FileInfo) -> None:
        chat = self.chats[who]
        self.act(who, "file", file.file_id, lambda: chat.send_file(file))

    @rule(seconds=st.just(0) | SECONDS, restart=st.booleans())
    def time_passes_and_due_timers_fire(self, seconds: int, restart: bool) -> None:
        """Time moves on (the bot perhaps restarting meanwhile), and the timers that fell due fire."""
        self.clock.advance(seconds=seconds)
        if restart:
            self.act(None, "restart", "", self.bot.restart)

        async def fire() -> None:
            await self.bot.runner.fire_due_timers()
            await self.bot.runner.settle()

        self.act(None, "timers", "", fire)

    @rule(who=st.sampled_from([USERS[0], USERS[0], USERS[0], USERS[1]]), moves=st.integers(1, 3), data=st.data())
    def a_user_moves_on(self, who: int, moves: int, data: st.DataObject) -> None:
        """A helpful user (and admin): do what the current step asks for, so deep steps get explored. Mostly
        the first user, so one case gets far; the second one meets it now and then."""
        for _ in range(moves):
            self.next_move(who, data)

    # --- the helpful user ---------------------------------------------------------------------------------

    def next_move(self, who: int, data: st.DataObject) -> None:
        case = active_case(self.store.cases(), who)
        if case is None:
            self.send(who, "/start")
        elif case.status == "review":
            self.staff_decides(case, data)
        else:
            step = FLOWS[case.flow].step(case.step)
            if step.accepts is Accepts.FILE:
                photo = data.draw(GOOD_PHOTO, label="photo")
                self.act(who, "file", photo.file_id, lambda: self.chats[who].send_file(photo))
            elif step.accepts is Accepts.TEXT and (not step.choices or data.draw(TYPE_RATHER, label="type")):
                self.send(who, self.answer_for(case, step.expects, data))
            else:
                self.tap_current(who, case, data)

    def answer_for(self, case: CaseView, expects: str | None, data: st.DataObject) -> str:
        if expects == "email":
            return data.draw(st.sampled_from([ADA, BEN, NOBODY]), label="email")
        if expects == "answer":
            return data.draw(st.sampled_from([ADA_ANSWER, ADA_ANSWER, "Rover"]), label="answer")
        if expects == "code":
            right = self.code_for(case) if data.draw(st.booleans(), label="right code") else None
            return right or data.draw(CODES, label="guessed code")
        return data.draw(st.sampled_from(["germany", "France", "land"]), label="text")

    def code_for(self, case: CaseView) -> str | None:
        """The code a legitimate user would send now: the newest shown code of the first unproven factor, the
        enrolment key's current code, or the account's authenticator code."""
        shown = self.model.codes.get(case.id, [])
        for factor in dict.fromkeys(f for f, _ in shown):
            if not case.data.get(f"{factor}_verified") and not case.data.get(f"{factor}_skipped"):
                return [code for f, code in shown if f == factor][-1]
        key = self.model.enrol_keys.get(case.id)
        if key is not None:
            return totp_now(key, self.clock.now())
        encrypted = self.store.accounts()[case.account_id].totp_secret_enc if case.account_id else None
        return totp_now(FACTORY.box.decrypt(encrypted), self.clock.now()) if encrypted else None

    def tap_current(self, who: int, case: CaseView, data: st.DataObject) -> None:
        prefix = f"{case.id}:{case.turn}:"
        shown = [(m.message_id, b.data) for m in self.chats[who].messages for row in m.buttons for b in row
                 if b.data.startswith(prefix)]
        if not shown:
            self.send(who, "/start")
            return
        message_id, button = self.pick_novel(case, shown, data)
        self.press(who, button, message_id)

    def pick_novel(self, case: CaseView, shown: list[tuple[int, str]], data: st.DataObject) -> tuple[int, str]:
        """Often the step's first button (usually the way forward), else one this example has pressed least at
        this step (so every way out gets explored), else any."""
        def tried(item: tuple[int, str]) -> int:
            return self.model.tried[(case.flow, case.step, item[1].rsplit(":", 1)[-1])]

        fewest = min(map(tried, shown))
        pools = {"first": shown[:1], "novel": [item for item in shown if tried(item) == fewest], "any": shown}
        pool = pools[data.draw(st.sampled_from(["first", "first", "novel", "any"]), label="how to pick")]
        picked = data.draw(st.sampled_from(pool), label="next button")
        self.model.tried[(case.flow, case.step, picked[1].rsplit(":", 1)[-1])] += 1
        return picked

    def staff_decides(self, case: CaseView, data: st.DataObject) -> None:
        admin = self.chats[ADMIN]
        shown = [(m.message_id, b.data) for m in admin.messages for row in m.buttons for b in row
                 if b.data.startswith(f"r:{case.id}:")]
        if not shown:
            self.send(ADMIN, f"/case {case.id}")
            return
        weighted = [s for s in shown if s[1].endswith(":approve")] * 2 + shown
        message_id, button = data.draw(st.sampled_from(weighted), label="staff button")
        self.press(ADMIN, button, message_id)


def mutations(data: str) -> list[str]:
    """Near misses of real button data: another turn, another choice, another case, odd shapes."""
    case_id, turn, choice = data.split(":")
    return [f"{case_id}:{int(turn) + 1}:{choice}", f"{case_id}:{max(0, int(turn) - 1)}:{choice}",
            f"{case_id}:0{turn}:{choice}", f"{case_id}:{turn}:{choice}x", f"{case_id}:{turn}:submit",
            f"{case_id}:{turn}:approve", f"{case_id.swapcase()}:{turn}:{choice}", f"{case_id[::-1]}:{turn}:{choice}",
            f"{case_id}:{turn}", f"{case_id}:{turn}:{choice}:{choice}", data.upper(), data + "x" * 64, f" {data}"]


# --- running it ----------------------------------------------------------------------------------------------


async def seed(path: Path) -> None:
    db = open_database(f"sqlite+aiosqlite:///{path}")
    try:
        async with SqlStore(db).transaction() as tx:
            report = await import_accounts(tx.accounts, ACCOUNTS_CSV, FACTORY.box, FakeClock().now())
            assert not report.errors, report.errors
    finally:
        await db.dispose()
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")


@pytest.fixture(scope="module")
def seeded_template(migrated_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The migrated database with Ada's and Ben's accounts, copied for each example."""
    path = tmp_path_factory.mktemp("desk-properties") / "seeded.db"
    shutil.copy(migrated_template, path)
    with asyncio.Runner() as runner:
        runner.run(seed(path))
    return path


def test_random_conversations_keep_the_desks_promises(
    seeded_template: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("flows.codes.secrets", ENTROPY)
    monkeypatch.setattr("flows.engine.secrets", ENTROPY)
    monkeypatch.setattr("flows.methods.enrol.new_secret", ENTROPY.base32_secret)
    chosen = PROFILES[PROFILE]
    with capsys.disabled():
        print(f"\n[desk properties] profile={PROFILE}: max_examples={chosen.max_examples}, "
              f"stateful_step_count={chosen.stateful_step_count}, derandomize={chosen.derandomize}")
    DeskMachine.template, DeskMachine.workdir = seeded_template, tmp_path
    run_state_machine_as_test(DeskMachine, settings=chosen)


# --- regressions found by the machine, shrunk to plain tests -------------------------------------------------


@pytest.mark.parametrize(("who", "command"), [(ADMIN, "/case  "), (USERS[0], "/reject \t")])
async def test_a_staff_command_with_blank_arguments_is_answered(desk: Bot, who: int, command: str) -> None:
    """Found by the machine: args of only spaces made staff_target raise IndexError (the internal-error path)."""
    replies = await desk.chat(user_id=who).send(command)
    assert replies and INTERNAL_ERROR not in replies
