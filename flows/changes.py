"""Changing the service's accounts as a decision commits: at once for the built-in table, through a queue for an
HTTP directory.

The flows call `request` with the changes a decision makes and what to tell the user once they are in force. The
built-in table (`AppliedAtOnce`) changes in the event's own transaction, so the user is told at once. An HTTP
directory (`QueuedForWorker`) cannot take part in that transaction: the changes are written to the queue in it
instead, the user is told they are being applied, and the change worker (`flows.change_worker`) sends them with
their idempotency keys and tells the user the usual message once the service confirms.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

from flows.directory import ENROL_AUTHENTICATOR, AccountDirectory, Change, ChangeRefused, SecretBox
from flows.events_out import account_event
from flows.ports import DirectoryChanges, DirectoryIds, EventOutbox
from flows.records import Case, QueuedChange
from flows.texts import Text, text

APPLIED = "directory_change_applied"
FAILED = "directory_change_failed"
STAFF_ALERT = "directory_change_alert"
"""The kinds of the detached timers the change worker sets once the service has answered for good."""


class Changes(Protocol):
    at_once: bool
    """Whether changes are in force when the decision commits (else the change worker sends them later)."""

    async def request(self, account_id: int, changes: Sequence[Change], group: str, case: Case | None,
                      then: Sequence[Text]) -> tuple[Text, ...]:
        """Make `changes` to the account, once for this `group` (the event's key); what to say now."""
        ...


def change_key(group: str, change: Change) -> str:
    return f"{group}:{change.kind}"


class AppliedAtOnce:
    """The built-in table: the changes commit with the decision, and the user hears `then` at once."""

    at_once = True

    def __init__(self, directory: AccountDirectory, events: EventOutbox | None = None,
                 now: datetime | None = None) -> None:
        self._directory = directory
        self._events = events
        self._now = now

    async def request(self, account_id: int, changes: Sequence[Change], group: str, case: Case | None,
                      then: Sequence[Text]) -> tuple[Text, ...]:
        for change in changes:
            await self._directory.apply(account_id, change, change_key(group, change))
        if self._events is not None and self._now is not None:
            await self._events.add([account_event(account_id, c, case.id if case else None, self._now)
                                    for c in changes])
        return tuple(then)


class QueuedForWorker:
    """An HTTP directory: the changes are queued in the decision's transaction; `then` waits for the service."""

    at_once = False

    def __init__(self, queue: DirectoryChanges, ids: DirectoryIds, box: SecretBox, now: datetime) -> None:
        self._queue = queue
        self._ids = ids
        self._box = box
        self._now = now

    async def request(self, account_id: int, changes: Sequence[Change], group: str, case: Case | None,
                      then: Sequence[Text]) -> tuple[Text, ...]:
        remote = await self._ids.remote_id(account_id)
        if remote is None:  # cannot happen: only an account the directory found gets this far
            raise ChangeRefused("no such account")
        last = len(changes) - 1
        queued = [  # each change gets a key of its own: update ids repeat across bots and after Telegram resets them
            QueuedChange(key=str(uuid.uuid4()), account_id=account_id, remote_id=remote,
                         change=change_to_json(change, self._box), case_id=case.id if case else None,
                         chat_id=case.chat_id if case else None,
                         then=_then(group, case, then) if index == last else {"group": group})
            for index, change in enumerate(changes)
        ]
        await self._queue.queue(queued, self._now)
        return (text("directory.being_applied"),)


def _then(group: str, case: Case | None, then: Sequence[Text]) -> dict[str, Any]:
    return {"group": group, "user_id": case.user_id if case else None, "say": [text_to_json(t) for t in then]}


def change_to_json(change: Change, box: SecretBox) -> dict[str, Any]:
    """A change as queued: the new authenticator secret only encrypted."""
    body: dict[str, Any] = {"kind": change.kind}
    if change.secret is not None:
        body["secret_enc"] = box.encrypt(change.secret)
    if change.until is not None:
        body["until"] = change.until.isoformat()
    return body


def change_from_json(body: Mapping[str, Any], box: SecretBox) -> Change:
    secret = box.decrypt(str(body["secret_enc"])) if body["kind"] == ENROL_AUTHENTICATOR else None
    until = datetime.fromisoformat(str(body["until"])) if body.get("until") else None
    return Change(str(body["kind"]), secret=secret, until=until)


def text_to_json(message: Text) -> dict[str, Any]:
    return {"key": message.key, "params": {name: _value_to_json(value) for name, value in message.params.items()},
            "sensitive": message.sensitive}


def text_from_json(body: Mapping[str, Any]) -> Text:
    params = {name: _value_from_json(value) for name, value in dict(body.get("params", {})).items()}
    return Text(str(body["key"]), params, sensitive=bool(body.get("sensitive", False)))


def _value_to_json(value: object) -> Any:
    if isinstance(value, Text):
        return {"$text": text_to_json(value)}
    if isinstance(value, (tuple, list)):
        return [_value_to_json(item) for item in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def _value_from_json(value: Any) -> object:
    if isinstance(value, dict) and "$text" in value:
        return text_from_json(value["$text"])
    if isinstance(value, list):
        return tuple(_value_from_json(item) for item in value)
    return value
