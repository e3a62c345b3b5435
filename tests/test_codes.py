"""Verification codes against the real migrated database: issue, check, use once, lock, expire, rate-limit."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from flows.clock import FakeClock
from flows.codes import CheckResult, CodePolicy, Codes, Issued, Refused
from flows.keys import derive_key
from flows.store.codes import SqlCodes
from flows.store.tables import accounts
from flows.store.tables import codes as codes_table

KEY = derive_key("k" * 32, "codes")
POLICY = CodePolicy()
CASE = "case-1"


@pytest.fixture
async def account_id(db: AsyncEngine, clock: FakeClock) -> int:
    now = clock.now()
    async with db.begin() as conn:
        result = await conn.execute(accounts.insert().values(
            email="alice@example.com", phone="+15550100", identity_verified=False, two_factor="totp",
            created_at=now, updated_at=now,
        ))
    key = result.inserted_primary_key
    assert key is not None
    return int(key[0])


@pytest.fixture
def fixed_codes(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Make `secrets.randbelow` hand out these values, in order, for deterministic codes."""
    values = [123456, 654321, 42, 999999, 111111, 222222]
    queue = iter(values)
    monkeypatch.setattr(secrets, "randbelow", lambda _bound: next(queue))
    yield values


async def issue(db: AsyncEngine, now: datetime, account_id: int | None, case_id: str = CASE,
                factor: str = "phone", user_id: int = 7) -> Issued | Refused:
    async with db.begin() as conn:
        return await Codes(SqlCodes(conn), KEY, now, POLICY).issue(account_id, case_id, factor, user_id)


async def issued(db: AsyncEngine, now: datetime, account_id: int | None, case_id: str = CASE,
                 factor: str = "phone", user_id: int = 7) -> Issued:
    result = await issue(db, now, account_id, case_id, factor, user_id)
    assert isinstance(result, Issued)
    return result


async def check(db: AsyncEngine, now: datetime, entered: str, factor: str = "phone",
                paused: bool = False) -> CheckResult:
    async with db.begin() as conn:
        return await Codes(SqlCodes(conn), KEY, now, POLICY).check(CASE, factor, entered, paused)


async def expiry(db: AsyncEngine, now: datetime) -> datetime | None:
    async with db.begin() as conn:
        return await Codes(SqlCodes(conn), KEY, now, POLICY).expiry(CASE, "phone")


def other(code: str) -> str:
    return f"{(int(code) + 1) % 10**6:06d}"


async def test_an_issued_code_checks_ok(db: AsyncEngine, clock: FakeClock, account_id: int) -> None:
    new = await issued(db, clock.now(), account_id)
    assert len(new.code) == 6 and new.code.isdigit()
    assert new.expires_at == clock.now() + timedelta(minutes=30)
    assert await expiry(db, clock.now()) == new.expires_at
    assert await check(db, clock.advance(minutes=1), new.code) == CheckResult("ok", 5)


async def test_a_code_is_single_use(db: AsyncEngine, clock: FakeClock, account_id: int) -> None:
    new = await issued(db, clock.now(), account_id)
    assert (await check(db, clock.now(), new.code)).status == "ok"
    assert await check(db, clock.now(), new.code) == CheckResult("missing", 0)
    assert await expiry(db, clock.now()) is None


async def test_no_code_is_missing(db: AsyncEngine, clock: FakeClock, account_id: int) -> None:
    assert await check(db, clock.now(), "123456") == CheckResult("missing", 0)
    assert await expiry(db, clock.now()) is None


async def test_wrong_tries_count_down_and_lock(db: AsyncEngine, clock: FakeClock, account_id: int) -> None:
    new = await issued(db, clock.now(), account_id)
    results = [await check(db, clock.now(), other(new.code)) for _ in range(5)]
    assert results == [
        CheckResult("wrong", 4, True), CheckResult("wrong", 3, True), CheckResult("wrong", 2, True),
        CheckResult("wrong", 1, True), CheckResult("locked", 0, True),
    ]
    assert await check(db, clock.now(), new.code) == CheckResult("locked", 0)  # not compared: not a failed try
    assert await expiry(db, clock.now()) is None
    async with db.connect() as conn:
        assert await conn.scalar(select(codes_table.c.wrong_tries)) == 5


async def test_a_non_numeric_entry_costs_a_try(db: AsyncEngine, clock: FakeClock, account_id: int) -> None:
    new = await issued(db, clock.now(), account_id)
    assert await check(db, clock.now(), "hello") == CheckResult("wrong", 4, True)
    assert await check(db, clock.now(), "") == CheckResult("wrong", 3, True)
    assert await check(db, clock.now(), new.code) == CheckResult("ok", 3)


async def test_a_code_expires_after_its_ttl(db: AsyncEngine, clock: FakeClock, account_id: int) -> None:
    new = await issued(db, clock.now(), account_id)
    assert await expiry(db, clock.now() + timedelta(minutes=29, seconds=59)) == new.expires_at
    clock.advance(minutes=30)
    assert await check(db, clock.now(), new.code) == CheckResult("expired", 0)
    assert await expiry(db, clock.now()) is None


async def test_a_quick_resend_is_refused(db: AsyncEngine, clock: FakeClock, account_id: int) -> None:
    first = clock.now()
    new = await issued(db, first, account_id)
    refused = await issue(db, clock.advance(seconds=59), account_id)
    assert refused == Refused("cooldown", first + timedelta(seconds=60))
    assert await check(db, clock.now(), new.code) == CheckResult("ok", 5)


async def test_cooldown_is_per_case_and_factor(db: AsyncEngine, clock: FakeClock, account_id: int) -> None:
    await issued(db, clock.now(), account_id, factor="phone")
    await issued(db, clock.now(), account_id, factor="email")
    await issued(db, clock.now(), account_id, case_id="case-2")


async def test_a_resend_after_the_cooldown_voids_the_old_code(
    db: AsyncEngine, clock: FakeClock, account_id: int, fixed_codes: list[int]
) -> None:
    old = await issued(db, clock.now(), account_id)
    new = await issued(db, clock.advance(seconds=60), account_id)
    assert (old.code, new.code) == ("123456", "654321")
    assert await check(db, clock.now(), old.code) == CheckResult("wrong", 4, True)
    assert await check(db, clock.now(), new.code) == CheckResult("ok", 4)
    assert await check(db, clock.now(), old.code) == CheckResult("missing", 0)
    async with db.connect() as conn:
        voided = (await conn.execute(select(codes_table.c.voided_at).order_by(codes_table.c.id))).scalars()
        assert list(voided) == [clock.now(), None]


async def test_a_fourth_code_in_an_hour_to_one_requester_is_a_decoy(
    db: AsyncEngine, clock: FakeClock, account_id: int
) -> None:
    first = clock.now()
    for case_id in ("a", "b", "c"):
        assert not (await issued(db, clock.advance(minutes=1), account_id, case_id, "phone")).decoy
    assert (await issued(db, clock.advance(minutes=1), account_id, "d", "phone")).decoy
    assert not (await issued(db, clock.now(), account_id, "d", "email")).decoy  # counted per factor
    assert not (await issued(db, clock.now(), account_id, "e", "phone", user_id=8)).decoy  # another requester
    assert not (await issued(db, first + timedelta(minutes=61), account_id, "f")).decoy


async def test_an_eleventh_code_in_an_hour_to_one_account_is_a_decoy(
    db: AsyncEngine, clock: FakeClock, account_id: int
) -> None:
    for user_id in range(10):
        assert not (await issued(db, clock.now(), account_id, f"case-{user_id}", user_id=user_id)).decoy
    assert (await issued(db, clock.now(), account_id, "case-x", user_id=99)).decoy
    assert (await issued(db, clock.advance(minutes=59), account_id, "case-y", user_id=98)).decoy
    assert not (await issued(db, clock.advance(minutes=2), account_id, "case-z", user_id=97)).decoy


async def test_a_decoy_is_checked_like_a_code_but_never_matches(
    db: AsyncEngine, clock: FakeClock, fixed_codes: list[int]
) -> None:
    decoy = await issued(db, clock.now(), None)
    assert decoy.decoy and decoy.code == "123456"
    assert await check(db, clock.now(), decoy.code) == CheckResult("wrong", 4, True)
    for _ in range(3):
        await check(db, clock.now(), decoy.code)
    assert await check(db, clock.now(), decoy.code) == CheckResult("locked", 0, True)


async def test_no_code_matches_while_the_account_is_paused(
    db: AsyncEngine, clock: FakeClock, account_id: int
) -> None:
    new = await issued(db, clock.now(), account_id)
    assert await check(db, clock.now(), new.code, paused=True) == CheckResult("wrong", 4, True)
    assert await check(db, clock.now(), new.code) == CheckResult("ok", 4)


async def test_codes_are_stored_only_as_a_keyed_hash(
    db: AsyncEngine, clock: FakeClock, account_id: int, fixed_codes: list[int]
) -> None:
    new = await issued(db, clock.now(), account_id)
    async with db.connect() as conn:
        row = (await conn.execute(select(codes_table))).one()
    assert row.code_hash == hmac.new(KEY, f"{CASE}:phone:{new.code}".encode(), hashlib.sha256).hexdigest()
    assert row.code_hash != hashlib.sha256(new.code.encode()).hexdigest()
    assert all(new.code not in str(value) for value in row)


async def test_fullwidth_digits_are_accepted(
    db: AsyncEngine, clock: FakeClock, account_id: int, fixed_codes: list[int]
) -> None:
    await issued(db, clock.now(), account_id)
    assert await check(db, clock.now(), "１２３ ４５６") == CheckResult("ok", 5)


def test_a_naive_now_is_refused() -> None:
    with pytest.raises(ValueError, match="naive"):
        Codes(None, KEY, datetime(2026, 1, 5), POLICY)  # type: ignore[arg-type]  # noqa: DTZ001
