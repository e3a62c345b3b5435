"""The service's own account system as the directory, over HTTP: the contract in `docs/directory-api.yaml`.

`DirectoryClient` makes the calls (one session per process, a bearer token or an HMAC signature on each request,
a timeout on each); `HttpDirectory` is the port's adapter for one event's transaction, which also gives the
service's opaque account ids desk ids of their own (`DirectoryIds`). Lookups run while the event decides;
changes do not: the flows queue them and the change worker (`flows.change_worker`) sends them.

Every failure to get an answer (timeout, refused or dropped connection, 429, 5xx, an answer outside the contract,
refused credentials) is `DirectoryUnavailable`, raised alike for known and unknown emails. After one, calls fail
at once for `cooldown` seconds, so an outage does not hold every event for the whole timeout.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, TypeVar
from urllib.parse import quote, urlsplit

import aiohttp
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from flows.directory import (
    ENROL_AUTHENTICATOR,
    LOCK_WITHDRAWALS,
    AccountView,
    Change,
    ChangeRefused,
    DirectoryUnavailable,
    normalize_email,
)
from flows.otp import normalize_code
from flows.ports import DirectoryIds

log = logging.getLogger(__name__)

NO_REMOTE_ACCOUNT = "desk-no-account"
"""The id asked about for an email with no account, so that it costs a round trip like a known one; a service
answers 404 for it (docs/directory-api.yaml reserves it)."""
MAX_ANSWER = 200
Model = TypeVar("Model", bound=BaseModel)


class RemoteAccount(BaseModel):
    """An account as the service describes it (the contract's `Account`)."""

    model_config = ConfigDict(extra="ignore")
    id: str = Field(pattern=r"^[A-Za-z0-9._~-]{1,64}$")  # as the contract: signed and sent as the same path
    email: str
    phone: str | None = None
    has_totp: bool
    two_factor: Literal["totp", "phone", "none"]
    security_question: str | None = None
    identity_verified: bool = False
    withdrawals_locked_until: datetime | None = None


class _AccountBody(BaseModel):
    account: RemoteAccount | None


class _ValidBody(BaseModel):
    valid: bool


class _LockBody(BaseModel):
    locked_until: datetime | None


@dataclass
class DirectoryHealth:
    """What staff see of the directory in /stats: when it last answered and when it last failed to."""

    last_ok: float | None = None
    last_failure: float | None = None
    last_reason: str | None = None
    failures: deque[float] = field(default_factory=lambda: deque(maxlen=1000))

    def failures_since(self, seconds: float) -> int:
        cutoff = time.monotonic() - seconds
        return sum(1 for at in self.failures if at >= cutoff)

    @property
    def down(self) -> bool:
        """Whether the last call failed."""
        return self.last_failure is not None and (self.last_ok is None or self.last_failure > self.last_ok)


class NotFound(Exception):
    """The service knows no such account (404)."""


def sign(key: bytes, timestamp: str, method: str, path: str, body: bytes) -> str:
    """The `Desk-Signature` value: HMAC-SHA256 over "{timestamp}.{METHOD}.{path}." and the raw body."""
    message = f"{timestamp}.{method.upper()}.{path}.".encode() + body
    return "v1=" + hmac.new(key, message, hashlib.sha256).hexdigest()


def change_body(change: Change) -> dict[str, Any]:
    """The contract's `Change` object for a change."""
    body: dict[str, Any] = {"kind": change.kind}
    if change.kind == ENROL_AUTHENTICATOR:
        body["secret"] = change.secret
    if change.kind == LOCK_WITHDRAWALS:
        assert change.until is not None
        body["until"] = change.until.isoformat()
    return body


class DirectoryClient:
    """Calls to the service's directory API; `token` or `signing_key` authenticates them."""

    def __init__(self, base_url: str, *, token: str | None = None, signing_key: str | None = None,
                 timeout: float = 5.0, cooldown: float = 10.0) -> None:
        if not (token or signing_key):
            raise ValueError("the directory needs a token or a signing key")
        self._base = base_url.rstrip("/")
        self._base_path = urlsplit(self._base).path
        self._token = token
        self._signing_key = signing_key.encode() if signing_key else None
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._cooldown = cooldown
        self._session: aiohttp.ClientSession | None = None
        self.health = DirectoryHealth()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    # --- the contract's operations ---

    async def lookup(self, email: str) -> RemoteAccount | None:
        try:
            body = await self._call("POST", "/accounts/lookup", {"email": normalize_email(email)})
        except NotFound:  # the contract has no 404 here: a wrong base URL, say
            self._failed("HTTP 404 on lookup (is ACCOUNT_DIRECTORY_URL right?)")
            raise DirectoryUnavailable("the directory has no lookup at this URL") from None
        return self._parse(_AccountBody, body).account

    async def get(self, remote_id: str) -> RemoteAccount | None:
        try:
            body = await self._call("GET", f"/accounts/{quote(remote_id, safe='')}")
        except NotFound:
            return None
        return self._parse(_AccountBody, body).account

    async def verify_totp(self, remote_id: str, code: str) -> bool:
        return await self._verify(f"/accounts/{quote(remote_id, safe='')}/totp/verify", {"code": code})

    async def verify_answer(self, remote_id: str, answer: str) -> bool:
        return await self._verify(f"/accounts/{quote(remote_id, safe='')}/security-answer/verify",
                                  {"answer": answer})

    async def withdrawal_lock(self, remote_id: str) -> datetime | None:
        try:
            body = await self._call("GET", f"/accounts/{quote(remote_id, safe='')}/withdrawal-lock")
        except NotFound:
            return None
        return self._parse(_LockBody, body).locked_until

    async def apply(self, remote_id: str, change: Change, key: str) -> RemoteAccount | None:
        """Apply a change once per `key`; None when the service knows no such account. `ChangeRefused` for a
        refusal that retrying cannot change (400, 409, 422)."""
        path = f"/accounts/{quote(remote_id, safe='')}/changes"
        try:
            body = await self._call("POST", path, {"change": change_body(change)}, idempotency_key=key)
        except NotFound:
            return None
        account = self._parse(_AccountBody, body).account
        if account is None or account.id != remote_id:  # confirmed for another account: not this change
            raise ChangeRefused("the service answered for another account")
        return account

    async def _verify(self, path: str, payload: Mapping[str, str]) -> bool:
        try:
            return self._parse(_ValidBody, await self._call("POST", path, payload)).valid
        except NotFound:
            return False

    # --- the plumbing ---

    def _parse(self, model: type[Model], body: Any) -> Model:
        try:
            return model.model_validate(body)
        except ValidationError as error:
            self._failed(f"an answer outside the contract ({error.error_count()} errors)")
            raise DirectoryUnavailable("the directory answered outside the contract") from None

    async def _call(self, method: str, path: str, payload: Mapping[str, Any] | None = None,
                    idempotency_key: str | None = None) -> Any:
        if self._cooling_down():
            raise DirectoryUnavailable("the directory failed a moment ago")
        raw = b"" if payload is None else json.dumps(payload, separators=(",", ":")).encode()
        headers = self._headers(method, self._base_path + path, raw)
        if idempotency_key is not None:
            headers["Idempotency-Key"] = idempotency_key
        try:
            async with self._open().request(method, self._base + path, data=raw or None, headers=headers) as answer:
                status = answer.status
                raw_body = await answer.read()
        except (TimeoutError, aiohttp.ClientError) as error:
            self._failed(type(error).__name__)
            raise DirectoryUnavailable(f"no answer from the directory ({type(error).__name__})") from None
        try:
            body = json.loads(raw_body) if raw_body else None
        except ValueError:  # an error page in HTML, say: its status still says what happened
            body = None
        return self._judge(status, body, changing=idempotency_key is not None)

    def _judge(self, status: int, body: Any, changing: bool) -> Any:
        """What an answer means. A 400, 409 or 422 refuses a change for good; to a read (which the desk
        builds by the contract) it can only mean the two sides disagree, so it is treated as an outage."""
        if 200 <= status < 300:
            self.health.last_ok = time.monotonic()
            return body
        code = _error_code(body)
        if status == 404:
            self.health.last_ok = time.monotonic()
            raise NotFound(code)
        if status in (400, 409, 422) and changing:
            self.health.last_ok = time.monotonic()
            raise ChangeRefused(f"HTTP {status} {code}")
        if status in (401, 403):
            log.error("the account directory refused the desk's credentials (HTTP %s): check "
                      "ACCOUNT_DIRECTORY_TOKEN / ACCOUNT_DIRECTORY_SIGNING_KEY", status)
        self._failed(f"HTTP {status} {code}")
        raise DirectoryUnavailable(f"the directory answered HTTP {status}")

    def _headers(self, method: str, path: str, raw: bytes) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if raw:
            headers["Content-Type"] = "application/json"
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        if self._signing_key is not None:
            timestamp = str(int(time.time()))
            headers["Desk-Timestamp"] = timestamp
            headers["Desk-Signature"] = sign(self._signing_key, timestamp, method, path, raw)
        return headers

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self._session

    def _cooling_down(self) -> bool:
        failed = self.health.last_failure
        return failed is not None and self.health.down and time.monotonic() - failed < self._cooldown

    def _failed(self, reason: str) -> None:
        now = time.monotonic()
        self.health.last_failure = now
        self.health.last_reason = reason
        self.health.failures.append(now)
        log.warning("the account directory did not answer: %s", reason)


def _error_code(body: Any) -> str:
    error = body.get("error") if isinstance(body, dict) else None
    code = error.get("code") if isinstance(error, dict) else None
    return str(code)[:40] if code else "no error code"


def _view(local_id: int, account: RemoteAccount) -> AccountView:
    return AccountView(
        id=local_id, email=account.email, phone=account.phone, has_totp=account.has_totp,
        security_question=account.security_question, identity_verified=account.identity_verified,
        two_factor=account.two_factor, withdrawals_locked_until=account.withdrawals_locked_until,
    )


class HttpDirectory:
    """The port's adapter over a `DirectoryClient`, for one event's transaction."""

    def __init__(self, client: DirectoryClient, ids: DirectoryIds, now: datetime) -> None:
        self._client = client
        self._ids = ids
        self._now = now

    async def find_by_email(self, email: str) -> AccountView | None:
        account = await self._client.lookup(email)
        return await self._local(account) if account is not None else None

    async def get(self, account_id: int) -> AccountView | None:
        """The account behind a desk id, which is already known: nothing to map back (and an answer about
        another account, the reserved id's above all, is no account)."""
        remote = await self._remote(account_id)
        account = await self._client.get(remote)
        return _view(account_id, account) if account is not None and account.id == remote else None

    async def verify_totp(self, account_id: int, code: str) -> bool:
        digits = normalize_code(code)
        if len(digits) != 6:  # outside the contract, whatever the account
            return False
        return await self._client.verify_totp(await self._remote(account_id), digits)

    async def verify_security_answer(self, account_id: int, answer: str) -> bool:
        answer = answer.strip()
        if not 1 <= len(answer) <= MAX_ANSWER:  # outside the contract, whatever the account
            return False
        return await self._client.verify_answer(await self._remote(account_id), answer)

    async def withdrawal_lock(self, account_id: int) -> datetime | None:
        return await self._client.withdrawal_lock(await self._remote(account_id))

    async def apply(self, account_id: int, change: Change, key: str) -> AccountView | None:
        """Sent at once; the flows queue changes instead (`flows.changes`), and the worker sends them."""
        account = await self._client.apply(await self._remote(account_id), change, key)
        return _view(account_id, account) if account is not None else None  # the client checked it is this one

    async def _remote(self, account_id: int) -> str:
        return await self._ids.remote_id(account_id) or NO_REMOTE_ACCOUNT

    async def _local(self, account: RemoteAccount) -> AccountView:
        """A found account with its desk id, given now if it is new."""
        local = (await self._ids.local_ids([account.id], self._now))[account.id]
        return _view(local, account)
