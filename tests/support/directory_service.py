"""A stand-in for the operator's account service: a real HTTP server (aiohttp, 127.0.0.1, a free port) that speaks
docs/directory-api.yaml and checks every request it receives and every response it sends against that document with
openapi-core. Anything off contract is answered 500 and kept in `violations`, which a test asserts empty.

    async with DirectoryService(token="t") as svc:
        jane = svc.add_account("jane@example.com", phone="+15551234534", totp_secret=SECRET)
        svc.fail_next("changes", status=503, times=2)   # the next two change requests answer 503
        svc.delay_next("lookup", seconds=5)             # the next lookup answers 5 s late
        svc.drop_after_apply_next()                     # the next change is applied, then the connection dropped
        await svc.settled()                             # wait for requests still being served (a late change)
        ... the code under test calls svc.url ...
        assert [c.change for c in svc.applied_changes] == [{"kind": "reset_two_factor"}]
        assert svc.violations == []

Operations are named as in the routes below: lookup, account, totp, answer, changes, withdrawal_lock, health.
Faults are queued: each request takes the first queued fault for its operation, in the order they were added.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import socket
import time
import unicodedata
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import pyotp
import pytest
from aiohttp import web
from multidict import CIMultiDictProxy
from openapi_core import OpenAPI
from openapi_core.datatypes import RequestParameters
from openapi_spec_validator.readers import read_from_filename

CONTRACT = Path(__file__).resolve().parents[2] / "docs" / "directory-api.yaml"
BASE_PATH = "/desk/v1"
SIGNATURE_WINDOW = 300  # seconds either side of the service's clock
TOKEN = "directory-test-token"
HMAC_KEY = "directory-test-hmac-key"

OPERATIONS = ("lookup", "account", "totp", "answer", "changes", "withdrawal_lock", "health")
ERROR_CODES = {
    400: "invalid_request",
    401: "unauthorized",
    404: "account_not_found",
    409: "idempotency_conflict",
    422: "change_refused",
    429: "rate_limited",
    500: "internal",
    502: "bad_gateway",
    503: "unavailable",
    504: "gateway_timeout",
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
DROP_AFTER_APPLY = web.RequestKey("drop_after_apply", bool)


@dataclass
class StubAccount:
    """An account as the service keeps it: with its secret and answer, which no response may carry."""

    id: str
    email: str
    phone: str | None
    totp_secret: str | None
    security_question: str | None
    security_answer: str | None
    identity_verified: bool
    two_factor: str
    withdrawals_locked_until: datetime | None = None
    last_totp_step: int | None = None  # the newest time step accepted: it and older ones are refused (replay)

    def public(self, now: datetime) -> dict[str, Any]:
        return {
            "id": self.id,
            "email": self.email,
            "phone": self.phone,
            "has_totp": self.totp_secret is not None,
            "two_factor": self.two_factor,
            "security_question": self.security_question,
            "identity_verified": self.identity_verified,
            "withdrawals_locked_until": _iso(self.lock_in_force(now)),
        }

    def lock_in_force(self, now: datetime) -> datetime | None:
        lock = self.withdrawals_locked_until
        return lock if lock is not None and lock > now else None


@dataclass(frozen=True)
class AppliedChange:
    account_id: str
    change: dict[str, Any]
    idempotency_key: str


@dataclass(frozen=True)
class Call:
    """One request the service received and the status it answered (None: the connection was dropped, by the
    service or by a client that gave up waiting)."""

    operation: str | None
    method: str
    path: str
    status: int | None
    idempotency_key: str | None = None


@dataclass(frozen=True)
class Violation:
    direction: Literal["request", "response"]
    method: str
    path: str
    errors: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.direction} {self.method} {self.path}: " + "; ".join(self.errors)


@dataclass
class Fault:
    operation: str
    kind: Literal["fail", "delay", "drop_after_apply"]
    remaining: int
    status: int = 503
    seconds: float = 0.0
    retry_after: int | None = None


@dataclass(frozen=True)
class _Remembered:
    """What an Idempotency-Key was first used for, and the answer it got."""

    fingerprint: tuple[str, str]
    body: dict[str, Any]


class _ContractRequest:
    """An aiohttp request as openapi-core reads one (its own adapter drops the port from the host)."""

    def __init__(self, request: web.Request, body: bytes, origin: str) -> None:
        self.host_url = origin
        self.path = request.rel_url.path
        self.method = request.method.lower()
        self.body: bytes | None = body or None
        self.content_type = request.content_type if body else ""
        self.parameters = RequestParameters(query=request.query, header=request.headers, cookie=request.cookies)


class _ContractResponse:
    def __init__(self, response: web.Response) -> None:
        body = response.body
        self.data = body if isinstance(body, bytes) else b""
        self.status_code = response.status
        self.content_type = response.content_type or ""
        self.headers: CIMultiDictProxy[str] = CIMultiDictProxy(response.headers)


def describe(error: Exception) -> str:
    """An openapi-core error by the schema errors it wraps (where in the body, what is wrong), else its message."""
    details: list[str] = []
    cause: BaseException | None = error
    while cause is not None:
        details.extend(f"{getattr(schema_error, 'json_path', '$')}: {getattr(schema_error, 'message', schema_error)}"
                       for schema_error in getattr(cause, "schema_errors", ()))
        cause = cause.__cause__
    return f"{type(error).__name__}: " + ("; ".join(details) if details else str(error))


def normalize_answer(answer: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", answer).casefold().split())


def error_response(status: int, message: str, retry_after: int | None = None) -> web.Response:
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    return web.json_response({"error": {"code": ERROR_CODES[status], "message": message}}, status=status,
                             headers=headers)


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


class ChangeRefused(Exception):
    pass


class ContractTotp(pyotp.TOTP):
    """pyotp 2.12 refuses secrets under 112 bits; the contract allows 16 base32 characters (80 bits)."""

    min_secret_length_bits = 80


class DirectoryService:
    """The account service of docs/directory-api.yaml, in memory, with fault injection. Accepts a bearer `token`,
    an HMAC `hmac_key` (signed requests), or both. `clock` (unix seconds) drives TOTP, locks and signatures."""

    def __init__(self, token: str | None = None, hmac_key: str | None = None, *, base_path: str = BASE_PATH,
                 clock: Callable[[], float] = time.time) -> None:
        if token is None and hmac_key is None:
            raise ValueError("the contract requires credentials: give a token, an hmac_key or both")
        self.token = token
        self.hmac_key = hmac_key
        self.base_path = base_path.rstrip("/")
        self.clock = clock
        self.accounts: dict[str, StubAccount] = {}
        self.applied_changes: list[AppliedChange] = []
        self.violations: list[Violation] = []
        self.calls: list[Call] = []
        self.faults: list[Fault] = []
        self._remembered: dict[str, _Remembered] = {}
        self._ids = itertools.count(1)
        self._socket = socket.socket()
        self._socket.bind(("127.0.0.1", 0))
        self.port: int = self._socket.getsockname()[1]
        self.origin = f"http://127.0.0.1:{self.port}"
        self.url = self.origin + self.base_path
        self._contract = self._load_contract()
        self._runner: web.AppRunner | None = None
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def _load_contract(self) -> OpenAPI:
        document, _ = read_from_filename(str(CONTRACT))
        return OpenAPI.from_dict({**document, "servers": [{"url": self.url}]})

    # --- life cycle ---------------------------------------------------------------------------------------------

    async def start(self) -> DirectoryService:
        @web.middleware
        async def serve(request: web.Request, handler: Handler) -> web.StreamResponse:
            return await self._serve(request, handler)

        app = web.Application(middlewares=[serve])
        routes: tuple[tuple[str, str, str, Handler], ...] = (
            ("POST", "/accounts/lookup", "lookup", self._lookup),
            ("GET", "/accounts/{account_id}", "account", self._get_account),
            ("POST", "/accounts/{account_id}/totp/verify", "totp", self._totp),
            ("POST", "/accounts/{account_id}/security-answer/verify", "answer", self._answer),
            ("POST", "/accounts/{account_id}/changes", "changes", self._changes),
            ("GET", "/accounts/{account_id}/withdrawal-lock", "withdrawal_lock", self._withdrawal_lock),
            ("GET", "/health", "health", self._health),
        )
        for method, path, operation, handler in routes:
            app.router.add_route(method, self.base_path + path, handler, name=operation)
        self._runner = web.AppRunner(app, shutdown_timeout=1.0)  # a delayed handler must not hold up the test
        await self._runner.setup()
        await web.SockSite(self._runner, self._socket).start()
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        self._socket.close()

    async def __aenter__(self) -> DirectoryService:
        return await self.start()

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None,
                        trace: TracebackType | None) -> None:
        await self.stop()

    # --- test helpers --------------------------------------------------------------------------------------------

    def add_account(self, email: str, *, phone: str | None = None, totp_secret: str | None = None,
                    security_question: str | None = None, security_answer: str | None = None,
                    identity_verified: bool = False, two_factor: str | None = None,
                    account_id: str | None = None) -> StubAccount:
        """An account; its second factor defaults to the authenticator if it has one, else the phone, else none."""
        if two_factor is None:
            two_factor = "totp" if totp_secret else "phone" if phone else "none"
        account = StubAccount(id=account_id or f"acc_{next(self._ids):04d}", email=email, phone=phone,
                              totp_secret=totp_secret, security_question=security_question,
                              security_answer=security_answer, identity_verified=identity_verified,
                              two_factor=two_factor)
        self.accounts[account.id] = account
        return account

    def fail_next(self, operation: str, *, status: int = 503, times: int = 1, retry_after: int | None = None) -> None:
        """The next `times` requests for `operation` answer `status` with the contract's error body, doing nothing."""
        if status not in ERROR_CODES:
            raise ValueError(f"status {status} is not one of {sorted(ERROR_CODES)}")
        self._queue(Fault(operation, "fail", times, status=status, retry_after=retry_after))

    def delay_next(self, operation: str, *, seconds: float, times: int = 1) -> None:
        """The next `times` requests for `operation` wait `seconds`, then are served as usual. The service goes on
        even if the client has given up, as a slow real one does: a late change is still applied."""
        self._queue(Fault(operation, "delay", times, seconds=seconds))

    def drop_after_apply_next(self, *, times: int = 1) -> None:
        """The next `times` change requests are served (the change applied), then the connection is closed with no
        response: the client cannot tell whether the change happened."""
        self._queue(Fault("changes", "drop_after_apply", times))

    def changes_for(self, account: StubAccount | str) -> list[dict[str, Any]]:
        account_id = account if isinstance(account, str) else account.id
        return [applied.change for applied in self.applied_changes if applied.account_id == account_id]

    def calls_to(self, operation: str) -> list[Call]:
        return [call for call in self.calls if call.operation == operation]

    def _queue(self, fault: Fault) -> None:
        if fault.operation not in OPERATIONS:
            raise ValueError(f"unknown operation {fault.operation!r}: one of {OPERATIONS}")
        if fault.remaining < 1:
            raise ValueError("times must be at least 1")
        self.faults.append(fault)

    def _take_fault(self, operation: str | None) -> Fault | None:
        for fault in self.faults:
            if fault.operation == operation:
                fault.remaining -= 1
                if fault.remaining == 0:
                    self.faults.remove(fault)
                return fault
        return None

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)

    # --- the pipeline every request goes through ---------------------------------------------------------------

    async def settled(self) -> None:
        """Wait until no request is being served, such as a delayed one whose client has given up."""
        await self._idle.wait()

    async def _serve(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        self._in_flight += 1
        self._idle.clear()
        try:
            return await self._serve_checked(request, handler)
        finally:
            self._in_flight -= 1
            if self._in_flight == 0:
                self._idle.set()

    async def _serve_checked(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        body = await request.read()
        operation = request.match_info.route.name
        key = request.headers.get("Idempotency-Key")
        contract_request = _ContractRequest(request, body, self.origin)
        response = await self._respond(request, handler, body, contract_request, operation)
        if isinstance(response, web.Response):
            response = self._checked_response(contract_request, response)
        dropped = request.transport is None or request.transport.is_closing()
        self.calls.append(Call(operation, request.method, request.rel_url.path, None if dropped else response.status,
                               key))
        return response

    async def _respond(self, request: web.Request, handler: Handler, body: bytes, contract_request: _ContractRequest,
                       operation: str | None) -> web.StreamResponse:
        if not self._authorized(request, body):
            return error_response(401, "Bad or missing credentials.")
        errors = [describe(error) for error in self._contract.iter_request_errors(contract_request)]
        if errors:
            return self._violation("request", request.method, request.rel_url.path, errors)
        fault = self._take_fault(operation)
        if fault is not None and fault.kind == "delay":
            await asyncio.sleep(fault.seconds)
        if fault is not None and fault.kind == "fail":
            return error_response(fault.status, "Injected failure.", fault.retry_after)
        request[DROP_AFTER_APPLY] = fault is not None and fault.kind == "drop_after_apply"
        return await handler(request)

    def _checked_response(self, contract_request: _ContractRequest, response: web.Response) -> web.Response:
        errors = [describe(error)
                  for error in self._contract.iter_response_errors(contract_request, _ContractResponse(response))]
        if not errors:
            return response
        return self._violation("response", contract_request.method.upper(), contract_request.path, errors)

    def _violation(self, direction: Literal["request", "response"], method: str, path: str,
                   errors: list[str]) -> web.Response:
        self.violations.append(Violation(direction, method, path, tuple(errors)))
        return web.json_response({"error": {"code": "contract_violation",
                                            "message": f"The {direction} breaks docs/directory-api.yaml."}},
                                 status=500)

    def _authorized(self, request: web.Request, body: bytes) -> bool:
        authorization = request.headers.get("Authorization")
        if authorization is not None:
            scheme, _, token = authorization.partition(" ")
            return (self.token is not None and scheme.lower() == "bearer"
                    and hmac.compare_digest(token.encode(), self.token.encode()))
        timestamp = request.headers.get("Desk-Timestamp")
        signature = request.headers.get("Desk-Signature")
        if self.hmac_key is None or timestamp is None or signature is None or not timestamp.isdigit():
            return False
        if abs(self.clock() - int(timestamp)) > SIGNATURE_WINDOW:
            return False
        signed = f"{timestamp}.{request.method.upper()}.{request.rel_url.raw_path}.".encode() + body
        expected = "v1=" + hmac.new(self.hmac_key.encode(), signed, hashlib.sha256).hexdigest()
        return hmac.compare_digest(signature.encode(), expected.encode())

    # --- the operations (their requests are valid by now) ------------------------------------------------------

    def _account(self, request: web.Request) -> StubAccount | None:
        return self.accounts.get(request.match_info["account_id"])

    async def _lookup(self, request: web.Request) -> web.Response:
        email = (await request.json())["email"].strip().casefold()
        found = next((account for account in self.accounts.values() if account.email.strip().casefold() == email), None)
        return web.json_response({"account": None if found is None else found.public(self.now())})

    async def _get_account(self, request: web.Request) -> web.Response:
        account = self._account(request)
        if account is None:
            return error_response(404, "No account has this id.")
        return web.json_response({"account": account.public(self.now())})

    async def _totp(self, request: web.Request) -> web.Response:
        account = self._account(request)
        if account is None:
            return error_response(404, "No account has this id.")
        code = (await request.json())["code"]
        return web.json_response({"valid": self._accept_totp(account, code)})

    def _accept_totp(self, account: StubAccount, code: str) -> bool:
        if account.totp_secret is None:
            return False
        totp = ContractTotp(account.totp_secret)
        now = self.clock()
        if not totp.verify(code, for_time=now, valid_window=1):
            return False
        current = int(now // totp.interval)
        matching = [step for step in (current - 1, current, current + 1)
                    if hmac.compare_digest(totp.at(step * totp.interval), code)]
        fresh = [step for step in matching if account.last_totp_step is None or step > account.last_totp_step]
        if not fresh:
            return False
        account.last_totp_step = max(fresh)
        return True

    async def _answer(self, request: web.Request) -> web.Response:
        account = self._account(request)
        if account is None:
            return error_response(404, "No account has this id.")
        given = normalize_answer((await request.json())["answer"])
        kept = account.security_answer
        valid = kept is not None and hmac.compare_digest(given.encode(), normalize_answer(kept).encode())
        return web.json_response({"valid": valid})

    async def _changes(self, request: web.Request) -> web.StreamResponse:
        response = await self._apply_once(request)
        if request[DROP_AFTER_APPLY] and request.transport is not None:
            request.transport.abort()
        return response

    async def _apply_once(self, request: web.Request) -> web.Response:
        account = self._account(request)
        if account is None:
            return error_response(404, "No account has this id.")
        key = request.headers["Idempotency-Key"]
        change = (await request.json())["change"]
        fingerprint = (account.id, json.dumps(change, sort_keys=True))
        remembered = self._remembered.get(key)
        if remembered is not None:
            if remembered.fingerprint != fingerprint:
                return error_response(409, "This Idempotency-Key was used for a different change.")
            return web.json_response(remembered.body)
        try:
            apply_change(account, change, self.now())
        except ChangeRefused as refusal:
            return error_response(422, str(refusal))
        self.applied_changes.append(AppliedChange(account.id, change, key))
        body = {"applied": True, "account": account.public(self.now())}
        self._remembered[key] = _Remembered(fingerprint, body)
        return web.json_response(body)

    async def _withdrawal_lock(self, request: web.Request) -> web.Response:
        account = self._account(request)
        if account is None:
            return error_response(404, "No account has this id.")
        return web.json_response({"locked_until": _iso(account.lock_in_force(self.now()))})

    async def _health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})


def apply_change(account: StubAccount, change: dict[str, Any], now: datetime) -> None:
    kind = change["kind"]
    if kind == "reset_two_factor":
        account.totp_secret = None
        account.last_totp_step = None
        account.two_factor = "none"
    elif kind == "switch_to_phone":
        if account.phone is None:
            raise ChangeRefused("The account has no phone to switch to.")
        account.totp_secret = None
        account.last_totp_step = None
        account.two_factor = "phone"
    elif kind == "remove_phone":
        if account.two_factor == "phone":
            raise ChangeRefused("The phone is the account's second factor.")
        account.phone = None
    elif kind == "enrol_authenticator":
        try:
            ContractTotp(change["secret"]).byte_secret()
        except ValueError as error:  # binascii.Error: a length base32 cannot have
            raise ChangeRefused("The secret is not valid base32.") from error
        account.totp_secret = change["secret"]
        account.last_totp_step = None
        account.two_factor = "totp"
    elif kind == "lock_withdrawals":
        until = datetime.fromisoformat(change["until"])
        if until.tzinfo is None:
            raise ChangeRefused("`until` needs a time zone.")
        current = account.lock_in_force(now)
        account.withdrawals_locked_until = until if current is None else max(current, until)
    else:  # the contract's oneOf lets nothing else through
        raise ChangeRefused(f"Unknown change {kind!r}.")


@pytest.fixture
async def directory_service() -> AsyncIterator[DirectoryService]:
    """The service, accepting TOKEN and HMAC_KEY; the test fails if anything went off contract."""
    async with DirectoryService(token=TOKEN, hmac_key=HMAC_KEY) as service:
        yield service
    assert not service.violations, "\n".join(map(str, service.violations))
