"""Importing the service's accounts from CSV into the directory.

The file is read and checked as a whole first: one bad row and nothing is written. Each row is the full record of
an account (an empty cell clears that field), except `identity_verified`, where an empty cell or a missing column
keeps what an existing account has. Importing the same file again changes nothing: secrets and answers are compared
with what is stored instead of being encrypted and hashed again.

The import never undoes the desk. Once the desk has changed an account (a factor, the secret or the withdrawal lock;
not an accepted TOTP step) after its row was last imported, a file that says otherwise about its phone,
authenticator secret or 2FA method does not overwrite them: the row is reported as kept (its line and masked email),
while the columns the desk never changes (the security question and answer, identity_verified) are still imported.
A file that agrees with the desk settles the row, which imports normally from then on; `overwrite_desk_changes`
lets the file win (and reports the rows it overwrote). The import never sets the withdrawal lock at all.
"""

from __future__ import annotations

import asyncio
import csv
import io
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from flows.directory import (
    DecryptError,
    SecretBox,
    hash_answer,
    is_peppered,
    mask_email,
    normalize_email,
    verify_answer,
)
from flows.otp import normalize_key
from flows.ports import Accounts
from flows.records import AccountChange, StoredAccount

REQUIRED_COLUMNS = ("email", "phone", "totp_secret", "security_question", "security_answer")
OPTIONAL_COLUMNS = ("identity_verified",)
MAX_EMAIL_LENGTH = 320
_PHONE = re.compile(r"\+[0-9]{8,15}")
_FLAGS = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False, "": None}

# The columns the desk changes (flows/directory.py), which an import leaves as the desk set them.
DESK_OWNED = ("phone", "totp_secret_enc", "totp_last_step", "two_factor")

Problem = tuple[int, str]
Row = tuple[int, str]  # the line of a row and its email, masked


@dataclass(frozen=True)
class ImportReport:
    """What an import did, or (when `errors` is not empty) why it did nothing. Each row counts once: created,
    updated, unchanged or `kept` (the desk's changes kept, the other columns imported); `overwritten` lists the
    updated rows whose desk changes the file replaced."""

    created: int = 0
    updated: int = 0
    unchanged: int = 0
    errors: list[Problem] = field(default_factory=list)
    kept: list[Row] = field(default_factory=list)
    overwritten: list[Row] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


@dataclass(frozen=True)
class AccountRecord:
    """One valid row, normalised; `identity_verified` is None when the file does not say."""

    line: int
    email: str
    phone: str | None
    totp_secret: str | None
    security_question: str | None
    security_answer: str | None
    identity_verified: bool | None

    @property
    def two_factor(self) -> str:
        return "totp" if self.totp_secret else "phone" if self.phone else "none"


def _email(raw: str) -> str:
    email = normalize_email(raw)
    if not email:
        raise ValueError("required")
    local, _, domain = email.partition("@")
    labels = domain.split(".")
    plausible = email.count("@") == 1 and local and len(labels) > 1 and all(labels)
    if len(email) > MAX_EMAIL_LENGTH or not plausible or " " in email or not email.isprintable():
        raise ValueError(f"{email!r} is not a plausible address")
    return email


def _phone(raw: str) -> str | None:
    phone = re.sub(r"[\s\-()]", "", raw)
    if phone and not _PHONE.fullmatch(phone):
        raise ValueError("expected + and 8 to 15 digits, e.g. +15551234567")
    return phone or None


def _totp_secret(raw: str) -> str | None:
    return normalize_key(raw) if raw.strip() else None


def _text(raw: str) -> str | None:
    return raw.strip() or None


def _flag(raw: str) -> bool | None:
    value = raw.strip().lower()
    if value not in _FLAGS:
        raise ValueError("expected true/false, yes/no, 1/0 or empty")
    return _FLAGS[value]


_PARSERS: dict[str, Callable[[str], Any]] = {
    "email": _email, "phone": _phone, "totp_secret": _totp_secret, "security_question": _text,
    "security_answer": _text, "identity_verified": _flag,
}


def _record(line: int, cells: Mapping[str, str]) -> AccountRecord | list[str]:
    values: dict[str, Any] = {}
    problems: list[str] = []
    for column, parse in _PARSERS.items():
        try:
            values[column] = parse(cells.get(column, ""))
        except ValueError as error:
            problems.append(f"{column}: {error}")
    if not problems and (values["security_question"] is None) != (values["security_answer"] is None):
        problems.append("security_question and security_answer: give both or neither")
    return problems or AccountRecord(line=line, **values)


def _header_problem(columns: Sequence[str]) -> str | None:
    unknown = [c for c in columns if c not in REQUIRED_COLUMNS + OPTIONAL_COLUMNS]
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    repeated = sorted({c for c in columns if columns.count(c) > 1})
    parts = [f"{label}: {', '.join(names)}" for label, names in
             (("unknown columns", unknown), ("missing columns", missing), ("repeated columns", repeated)) if names]
    return "; ".join(parts) or None


def _lines(text: str) -> tuple[list[tuple[int, list[str]]], Problem | None]:
    """Non-blank records with the line each starts on (a quoted cell may span lines)."""
    reader = csv.reader(io.StringIO(text.removeprefix("\ufeff"), newline=""))
    records: list[tuple[int, list[str]]] = []
    start = 1
    try:
        for cells in reader:
            if any(cell.strip() for cell in cells):
                records.append((start, cells))
            start = reader.line_num + 1
    except csv.Error as error:
        return records, (start, f"unreadable CSV: {error}")
    return records, None


def _check_rows(columns: list[str], rows: list[tuple[int, list[str]]]) -> tuple[list[AccountRecord], list[Problem]]:
    records: list[AccountRecord] = []
    errors: list[Problem] = []
    first_line: dict[str, int] = {}
    for line, cells in rows:
        if len(cells) != len(columns):
            errors.append((line, f"expected {len(columns)} values, found {len(cells)}"))
            continue
        result = _record(line, dict(zip(columns, cells, strict=True)))
        if isinstance(result, list):
            errors.extend((line, problem) for problem in result)
        elif result.email in first_line:
            errors.append((line, f"email: {result.email!r} is already on line {first_line[result.email]}"))
        else:
            first_line[result.email] = line
            records.append(result)
    return records, errors


def parse_accounts(rows_text: str) -> tuple[list[AccountRecord], list[Problem]]:
    """The valid records and the problems of a CSV file, with line numbers as shown in an editor."""
    rows, unreadable = _lines(rows_text)
    if not rows:
        return [], [unreadable or (1, "the file is empty: expected a header line")]
    (_, header), *body = rows
    columns = [name.strip().lower() for name in header]
    if problem := _header_problem(columns):
        return [], [(1, problem)]
    records, errors = _check_rows(columns, body)
    return records, errors + ([unreadable] if unreadable else [])


@dataclass
class _Plan:
    inserts: dict[str, AccountChange] = field(default_factory=dict)
    updates: dict[int, AccountChange] = field(default_factory=dict)
    updated: int = 0
    unchanged: int = 0
    kept: list[Row] = field(default_factory=list)
    overwritten: list[Row] = field(default_factory=list)


def _decrypted(secrets: SecretBox, encrypted: str | None) -> str | None:
    try:
        return None if encrypted is None else secrets.decrypt(encrypted)
    except DecryptError:
        return "\0undecryptable"


def _answer_hash(answer: str | None, stored: str | None, pepper: bytes) -> str | None:
    """The stored hash while it is peppered and still matches; otherwise a new peppered one (so a re-import also
    upgrades hashes made before the pepper)."""
    if answer is None:
        return None
    if stored is not None and is_peppered(stored) and verify_answer(answer, stored, pepper):
        return stored
    return hash_answer(answer, pepper)


def _secret_columns(record: AccountRecord, current: StoredAccount | None, secrets: SecretBox) -> AccountChange:
    stored = current.totp_secret_enc if current else None
    if record.totp_secret == _decrypted(secrets, stored):
        return {"totp_secret_enc": stored, "totp_last_step": current.totp_last_step if current else None}
    encrypted = secrets.encrypt(record.totp_secret) if record.totp_secret else None
    return {"totp_secret_enc": encrypted, "totp_last_step": None}


def _values(record: AccountRecord, current: StoredAccount | None, secrets: SecretBox) -> AccountChange:
    """The columns an import sets, keeping stored ciphertext and hashes where the plaintext is the same."""
    verified = record.identity_verified
    return {
        "phone": record.phone,
        "security_question": record.security_question,
        "security_answer_hash": _answer_hash(record.security_answer, current.security_answer_hash if current else None,
                                             secrets.answer_pepper),
        "identity_verified": (current.identity_verified if current else False) if verified is None else verified,
        "two_factor": record.two_factor,
        **_secret_columns(record, current, secrets),
    }


def _differs(current: StoredAccount, values: Mapping[str, Any]) -> bool:
    stored: Mapping[str, Any] = vars(current)
    return any(stored[name] != value for name, value in values.items())


def _changed_by_desk_since_import(current: StoredAccount) -> bool:
    """Whether the desk changed the row after the last import set it (at the same instant counts: keep the desk's)."""
    desk, imported = current.desk_changed_at, current.imported_at
    return desk is not None and (imported is None or desk >= imported)


def _without_desk_columns(values: AccountChange) -> AccountChange:
    return {name: value for name, value in values.items() if name not in DESK_OWNED}  # type: ignore[return-value]


def _plan_update(plan: _Plan, record: AccountRecord, current: StoredAccount, values: AccountChange,
                 overwrite_desk_changes: bool, now: datetime) -> None:
    row = (record.line, mask_email(record.email))
    desk_columns = {name: value for name, value in values.items() if name in DESK_OWNED}
    against_desk = _changed_by_desk_since_import(current) and _differs(current, desk_columns)
    if against_desk and not overwrite_desk_changes:
        plan.kept.append(row)
        if _differs(current, rest := _without_desk_columns(values)):
            plan.updates[current.id] = rest  # not imported in full: imported_at stays, so the desk's stay kept
        return
    if against_desk:
        plan.overwritten.append(row)
    if _differs(current, values):
        plan.updated += 1
        plan.updates[current.id] = {**values, "imported_at": now}
    else:
        plan.unchanged += 1
        if _changed_by_desk_since_import(current):  # the file agrees with the desk now: settled
            plan.updates[current.id] = {"imported_at": now}


def _plan(records: list[AccountRecord], existing: Mapping[str, StoredAccount], secrets: SecretBox,
          overwrite_desk_changes: bool, now: datetime) -> _Plan:
    plan = _Plan()
    for record in records:
        current = existing.get(record.email)
        values = _values(record, current, secrets)
        if current is None:
            plan.inserts[record.email] = {**values, "imported_at": now}
        else:
            _plan_update(plan, record, current, values, overwrite_desk_changes, now)
    return plan


async def import_accounts(accounts: Accounts, rows_text: str, secrets: SecretBox, now: datetime, *,
                          overwrite_desk_changes: bool = False) -> ImportReport:
    """Create or update the accounts of a CSV file in the caller's transaction; all or nothing. What the desk changed
    since a row's last import is kept (and reported) unless `overwrite_desk_changes`."""
    records, errors = parse_accounts(rows_text)
    if errors:
        return ImportReport(errors=errors)
    existing = await accounts.by_emails([record.email for record in records])
    plan = await asyncio.to_thread(_plan, records, existing, secrets, overwrite_desk_changes, now)
    if plan.inserts:
        await accounts.add(plan.inserts, now)
    if plan.updates:
        await accounts.change(plan.updates, now, by_import=True)
    return ImportReport(created=len(plan.inserts), updated=plan.updated, unchanged=plan.unchanged, kept=plan.kept,
                        overwritten=plan.overwritten)
