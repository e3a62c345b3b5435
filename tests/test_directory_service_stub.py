"""The directory contract (docs/directory-api.yaml) is a valid OpenAPI 3.1 document, and the stub service that the
HTTP adapter's tests run against keeps to it: credentials, replay, idempotency, faults, and its own answers checked."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from openapi_schema_validator import OAS31Validator
from openapi_spec_validator import validate
from openapi_spec_validator.readers import read_from_filename

from tests.support.directory_service import (
    CONTRACT,
    HMAC_KEY,
    TOKEN,
    ContractTotp,
    DirectoryService,
    StubAccount,
    directory_service,
)

__all__ = ["directory_service"]  # the fixture

SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
RESET = {"kind": "reset_two_factor"}


def signature_headers(key: str, method: str, path: str, body: bytes, timestamp: int) -> dict[str, str]:
    """Signed as the contract describes it, written out here rather than borrowed from the stub."""
    message = f"{timestamp}.{method}.{path}.".encode() + body
    return {"Desk-Timestamp": str(timestamp),
            "Desk-Signature": "v1=" + hmac.new(key.encode(), message, hashlib.sha256).hexdigest()}


@dataclass
class Desk:
    """A client of the service, as the desk's adapter is one."""

    service: DirectoryService
    session: aiohttp.ClientSession
    auth: str = "bearer"

    async def call(self, method: str, path: str, body: Any = None,
                   headers: dict[str, str] | None = None) -> tuple[int, Any]:
        raw = b"" if body is None else json.dumps(body).encode()
        sent = {"Content-Type": "application/json"} if body is not None else {}
        if self.auth == "bearer":
            sent["Authorization"] = f"Bearer {TOKEN}"
        elif self.auth == "hmac":
            sent |= signature_headers(HMAC_KEY, method, self.service.base_path + path, raw, int(time.time()))
        sent |= headers or {}
        async with self.session.request(method, self.service.url + path, data=raw or None,
                                        headers=sent) as response:
            return response.status, await response.json()

    async def change(self, account: StubAccount, change: dict[str, Any], key: str) -> tuple[int, Any]:
        return await self.call("POST", f"/accounts/{account.id}/changes", {"change": change},
                               headers={"Idempotency-Key": key})


@pytest.fixture
def service(directory_service: DirectoryService) -> DirectoryService:
    return directory_service


@pytest.fixture
async def desk(service: DirectoryService) -> AsyncIterator[Desk]:
    async with aiohttp.ClientSession() as session:
        yield Desk(service, session)


@pytest.fixture
def jane(service: DirectoryService) -> StubAccount:
    return service.add_account("Jane.Doe@example.com", phone="+15551234534", totp_secret=SECRET,
                               security_question="First pet?", security_answer="Rex the Dog", identity_verified=True)


def test_the_contract_is_a_valid_openapi_3_1_document() -> None:
    document, _ = read_from_filename(str(CONTRACT))
    validate(document)
    assert document["openapi"].startswith("3.1.")
    operations = {operation["operationId"] for path in document["paths"].values()
                  for operation in path.values() if "operationId" in operation}
    assert operations == {"lookupAccount", "getAccount", "verifyTotp", "verifySecurityAnswer", "applyChange",
                          "getWithdrawalLock", "health"}
    assert set(document["webhooks"]) == {"deskEvent"}


def examples_with_their_schemas(node: Any, pointer: str = "") -> Iterator[tuple[str, str, Any]]:
    """(where, JSON pointer of the schema, example) for every example next to a schema in the document."""
    if isinstance(node, dict):
        if "schema" in node:
            schema = f"{pointer}/schema"
            if "example" in node:
                yield pointer, schema, node["example"]
            for name, example in node.get("examples", {}).items():
                yield f"{pointer}/examples/{name}", schema, example["value"]
        for key, value in node.items():
            yield from examples_with_their_schemas(value, f"{pointer}/{key.replace('~', '~0').replace('/', '~1')}")


def test_every_example_in_the_contract_follows_its_schema() -> None:
    document, _ = read_from_filename(str(CONTRACT))
    found = list(examples_with_their_schemas(document))
    assert len(found) > 20
    for where, schema, example in found:
        # The whole document as the root schema, so that its "#/components/..." references resolve; JSON Schema
        # ignores the OpenAPI keys around the reference.
        validator = OAS31Validator({**document, "$ref": f"#{schema}"})
        assert [error.message for error in validator.iter_errors(example)] == [], where


def test_the_signature_example_in_the_contract_is_the_hmac_it_describes() -> None:
    headers = signature_headers("k", "POST", "/desk/v1/accounts/lookup", b'{"email":"jane@example.com"}', 1764756000)
    assert f"Desk-Signature: {headers['Desk-Signature']}" in CONTRACT.read_text()


async def test_lookup_finds_the_account_whatever_the_case_of_the_email(desk: Desk, jane: StubAccount) -> None:
    status, body = await desk.call("POST", "/accounts/lookup", {"email": " jane.doe@EXAMPLE.com"})
    assert status == 200
    assert body["account"]["id"] == jane.id
    assert (body["account"]["has_totp"], body["account"]["two_factor"]) == (True, "totp")
    assert SECRET not in json.dumps(body) and "Rex" not in json.dumps(body)


async def test_lookup_of_an_unknown_email_is_null_not_an_error(desk: Desk, jane: StubAccount) -> None:
    assert await desk.call("POST", "/accounts/lookup", {"email": "john@example.com"}) == (200, {"account": None})


async def test_an_unknown_account_id_is_account_not_found(desk: Desk) -> None:
    status, body = await desk.call("GET", "/accounts/acc_missing")
    assert (status, body["error"]["code"]) == (404, "account_not_found")


async def test_a_wrong_token_or_none_is_unauthorized(desk: Desk) -> None:
    status, body = await desk.call("GET", "/health", headers={"Authorization": "Bearer wrong"})
    assert (status, body["error"]["code"]) == (401, "unauthorized")
    desk.auth = "none"
    assert (await desk.call("GET", "/health"))[0] == 401


async def test_a_signed_request_is_accepted(desk: Desk, jane: StubAccount) -> None:
    desk.auth = "hmac"
    status, body = await desk.call("POST", "/accounts/lookup", {"email": "jane.doe@example.com"})
    assert (status, body["account"]["id"]) == (200, jane.id)


async def test_a_signature_with_the_wrong_key_is_unauthorized(desk: Desk) -> None:
    desk.auth = "hmac"
    forged = signature_headers("not-the-key", "GET", "/desk/v1/health", b"", int(time.time()))
    assert (await desk.call("GET", "/health", headers=forged))[0] == 401


async def test_a_signature_over_another_body_is_unauthorized(desk: Desk, jane: StubAccount) -> None:
    desk.auth = "hmac"
    other = signature_headers(HMAC_KEY, "POST", "/desk/v1/accounts/lookup", b'{"email":"john@example.com"}',
                              int(time.time()))
    assert (await desk.call("POST", "/accounts/lookup", {"email": "jane.doe@example.com"}, headers=other))[0] == 401


async def test_a_stale_timestamp_is_unauthorized_even_when_signed_right(desk: Desk) -> None:
    desk.auth = "hmac"
    stale = signature_headers(HMAC_KEY, "GET", "/desk/v1/health", b"", int(time.time()) - 301)
    assert (await desk.call("GET", "/health", headers=stale))[0] == 401


async def test_the_contract_example_signature_is_accepted_at_its_time() -> None:
    async with DirectoryService(hmac_key="k", clock=lambda: 1764756000 + 299) as at_that_time, \
            aiohttp.ClientSession() as session:
        at_that_time.add_account("jane@example.com")
        headers = {"Desk-Timestamp": "1764756000", "Content-Type": "application/json",
                   "Desk-Signature": "v1=80d766290289abd9ea8ceab74c29955ba74dd89766992b48bc4c66947d363331"}
        async with session.post(at_that_time.url + "/accounts/lookup", data=b'{"email":"jane@example.com"}',
                                headers=headers) as response:
            assert response.status == 200
        assert at_that_time.violations == []


async def test_a_totp_code_is_accepted_once_and_refused_when_replayed(desk: Desk, jane: StubAccount) -> None:
    code = ContractTotp(SECRET).now()
    path = f"/accounts/{jane.id}/totp/verify"
    assert await desk.call("POST", path, {"code": code}) == (200, {"valid": True})
    assert await desk.call("POST", path, {"code": code}) == (200, {"valid": False})


async def test_a_wrong_totp_code_is_not_valid(desk: Desk, jane: StubAccount) -> None:
    wrong = f"{(int(ContractTotp(SECRET).now()) + 1) % 1_000_000:06d}"
    assert await desk.call("POST", f"/accounts/{jane.id}/totp/verify", {"code": wrong}) == (200, {"valid": False})


async def test_the_security_answer_ignores_case_and_spacing(desk: Desk, jane: StubAccount) -> None:
    path = f"/accounts/{jane.id}/security-answer/verify"
    assert await desk.call("POST", path, {"answer": "  rex THE   dog "}) == (200, {"valid": True})
    assert await desk.call("POST", path, {"answer": "Rex"}) == (200, {"valid": False})


async def test_a_change_sent_twice_with_one_key_is_applied_once(desk: Desk, service: DirectoryService,
                                                                jane: StubAccount) -> None:
    key = str(uuid.uuid4())
    first = await desk.change(jane, RESET, key)
    again = await desk.change(jane, RESET, key)
    assert first == again
    assert first[0] == 200 and first[1]["account"]["has_totp"] is False
    assert service.changes_for(jane) == [RESET]


async def test_a_key_reused_for_another_change_is_a_conflict(desk: Desk, service: DirectoryService,
                                                            jane: StubAccount) -> None:
    key = str(uuid.uuid4())
    await desk.change(jane, RESET, key)
    status, body = await desk.change(jane, {"kind": "remove_phone"}, key)
    assert (status, body["error"]["code"]) == (409, "idempotency_conflict")
    assert service.changes_for(jane) == [RESET]
    assert jane.phone == "+15551234534"


async def test_a_change_the_service_will_not_make_is_refused(desk: Desk, service: DirectoryService) -> None:
    no_phone = service.add_account("nophone@example.com", totp_secret=SECRET)
    status, body = await desk.change(no_phone, {"kind": "switch_to_phone"}, str(uuid.uuid4()))
    assert (status, body["error"]["code"]) == (422, "change_refused")
    assert service.applied_changes == []


async def test_a_withdrawal_lock_only_ever_extends(desk: Desk, jane: StubAccount) -> None:
    await desk.change(jane, {"kind": "lock_withdrawals", "until": "2099-01-02T00:00:00Z"}, str(uuid.uuid4()))
    await desk.change(jane, {"kind": "lock_withdrawals", "until": "2099-01-01T00:00:00Z"}, str(uuid.uuid4()))
    assert await desk.call("GET", f"/accounts/{jane.id}/withdrawal-lock") == (
        200, {"locked_until": "2099-01-02T00:00:00Z"})


async def test_injected_failures_answer_their_status_then_the_service_recovers(
        desk: Desk, service: DirectoryService, jane: StubAccount) -> None:
    service.fail_next("changes", status=503, times=2)
    service.fail_next("changes", status=429, retry_after=3)
    key = str(uuid.uuid4())
    statuses = [(await desk.change(jane, RESET, key))[0] for _ in range(4)]
    assert statuses == [503, 503, 429, 200]
    assert service.changes_for(jane) == [RESET]
    assert [call.status for call in service.calls_to("changes")] == [503, 503, 429, 200]


async def test_an_injected_500_touches_only_its_operation(desk: Desk, service: DirectoryService,
                                                         jane: StubAccount) -> None:
    service.fail_next("lookup", status=500)
    assert (await desk.call("GET", "/health"))[0] == 200
    status, body = await desk.call("POST", "/accounts/lookup", {"email": jane.email})
    assert (status, body["error"]["code"]) == (500, "internal")


async def test_a_delayed_answer_outlasts_a_client_timeout(desk: Desk, service: DirectoryService,
                                                          jane: StubAccount) -> None:
    service.delay_next("lookup", seconds=2)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.2):
            await desk.call("POST", "/accounts/lookup", {"email": jane.email})
    status, body = await desk.call("POST", "/accounts/lookup", {"email": jane.email})
    assert (status, body["account"]["id"]) == (200, jane.id)


async def test_a_change_that_answers_too_late_is_still_applied_once_after_a_retry(
        desk: Desk, service: DirectoryService, jane: StubAccount) -> None:
    service.delay_next("changes", seconds=1)
    key = str(uuid.uuid4())
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.2):
            await desk.change(jane, RESET, key)
    assert (await desk.change(jane, RESET, key))[0] == 200
    await service.settled()
    assert service.changes_for(jane) == [RESET]
    assert [call.status for call in service.calls_to("changes")] == [200, None]


async def test_a_dropped_connection_after_the_change_then_a_retry_applies_it_once(
        desk: Desk, service: DirectoryService, jane: StubAccount) -> None:
    service.drop_after_apply_next()
    key = str(uuid.uuid4())
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await desk.change(jane, RESET, key)
    assert service.changes_for(jane) == [RESET]
    status, body = await desk.change(jane, RESET, key)
    assert (status, body["applied"], body["account"]["has_totp"]) == (200, True, False)
    assert service.changes_for(jane) == [RESET]
    assert [call.status for call in service.calls_to("changes")] == [None, 200]


async def test_a_request_off_contract_is_answered_500_and_recorded(desk: Desk, service: DirectoryService,
                                                                  jane: StubAccount) -> None:
    status, _ = await desk.call("POST", f"/accounts/{jane.id}/totp/verify", {"code": "12345"})
    assert status == 500
    assert [(v.direction, v.path) for v in service.violations] == [
        ("request", f"/desk/v1/accounts/{jane.id}/totp/verify")]
    assert "$.code" in str(service.violations[0])
    service.violations.clear()


async def test_a_change_without_an_idempotency_key_is_off_contract(desk: Desk, service: DirectoryService,
                                                                  jane: StubAccount) -> None:
    assert (await desk.call("POST", f"/accounts/{jane.id}/changes", {"change": RESET}))[0] == 500
    assert service.applied_changes == []
    assert len(service.violations) == 1
    service.violations.clear()


async def test_a_response_that_would_break_the_schema_is_caught(desk: Desk, service: DirectoryService,
                                                               jane: StubAccount) -> None:
    jane.phone = "555-1234"  # not E.164
    status, body = await desk.call("GET", f"/accounts/{jane.id}")
    assert (status, body["error"]["code"]) == (500, "contract_violation")
    assert [v.direction for v in service.violations] == ["response"]
    assert "phone" in str(service.violations[0])
    service.violations.clear()


def test_faults_name_an_operation_of_the_contract(service: DirectoryService) -> None:
    with pytest.raises(ValueError, match="unknown operation"):
        service.fail_next("change", status=503)
    with pytest.raises(ValueError, match="status"):
        service.fail_next("changes", status=418)
