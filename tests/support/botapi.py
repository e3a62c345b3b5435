"""A local Telegram Bot API server for end-to-end tests.

``BotApiServer`` speaks enough of the Bot API over real HTTP (aiohttp, 127.0.0.1, a port chosen by the
OS) that python-telegram-bot and aiogram run unmodified against it, with no network:

    server = BotApiServer(token="123456:TEST")
    await server.start()
    bot = telegram.Bot(token, base_url=f"{server.url}/bot", base_file_url=f"{server.url}/file/bot")
    server.user_sends_text(42, "/start")          # the bot receives it through getUpdates
    await server.wait_for_call("sendMessage", chat_id=42)
    server.chat_messages(42)                      # what the chat shows now
    await server.stop()

What it does like Telegram: per-chat message ids, full ``Message`` objects in answers, HTML
``parse_mode`` turned into plain text plus entities (and malformed HTML refused with Telegram's
"can't parse entities" errors), "message is not modified", callback data over 64 bytes refused,
albums of 2-10 items only, documents grouped only with documents, a document's file_id refused as a photo,
long-polling ``getUpdates`` with offset confirmation, 409 while a webhook is set or when a second poll
supersedes the first, Telegram's error bodies for 401/403/404/429 and 5xx.

Faults, each for the next ``count`` calls of one method, in the order they were asked for:

    server.fail_next("sendMessage", status=502)    # Telegram's error answer (429 with retry_after, 5xx, 403...)
    server.stall_next("sendMessage", seconds=8)    # held unanswered, then the connection is dropped
    server.reset_next("getUpdates")                # the connection is dropped at once, with a TCP reset

A stalled or reset call is never processed (nothing is sent, no update confirmed); it is recorded with
``status`` 0, and a stall ends early once the client gives up (``client_gone``).

What it does not: Markdown parse modes (the text is kept as sent, without entities), groups beyond a
placeholder chat, payments, inline mode, and any method not in ``BotApiServer.supported_methods()``
(those answer 404 "method not found" as Telegram does for a misspelt method).

Form values arrive as strings (both libraries JSON-encode everything except plain strings), so a
value is JSON-decoded unless its parameter is free text (``text``, ``caption``, ``data``...).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import itertools
import json
import mimetypes
import re
import socket
import struct
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from html import unescape
from html.parser import HTMLParser
from typing import Any, Self

from aiohttp import ClientSession, ClientTimeout, web

Json = dict[str, Any]
Uploads = dict[str, "Upload"]
MethodHandler = Callable[[Json, Uploads], Awaitable[Any]]
CallPredicate = Callable[["Call"], bool]

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
WEBHOOK_CONFLICT = (
    "Conflict: can't use getUpdates method while webhook is active; use deleteWebhook to delete the webhook first"
)
POLL_CONFLICT = "Conflict: terminated by other getUpdates request; make sure that only one bot instance is running"
NOT_MODIFIED = (
    "message is not modified: specified new message content and reply markup are exactly the same "
    "as a current content and reply markup of the message"
)
WRONG_FILE = "wrong file identifier/HTTP URL specified"
DOCUMENT_AS_PHOTO = "can't use file of type Document as Photo"
ALBUM_SIZE = "media must be an array of 2-10 InputMedia objects"
ALBUM_MIXED = "documents can be grouped in an album only with documents"
_ERROR_DESCRIPTIONS = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden: bot was blocked by the user",
    404: "Not Found",
    409: POLL_CONFLICT,
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}
# Parameters whose form value is free text and must never be JSON-decoded ("123" stays a string).
_TEXT_PARAMS = frozenset(
    {
        "text", "caption", "data", "parse_mode", "callback_query_id", "inline_message_id", "url",
        "secret_token", "file_id", "ip_address", "language_code", "description", "short_description",
        "name", "title", "query", "emoji", "business_connection_id", "message_effect_id", "action",
        "photo", "document", "audio", "video", "animation", "voice", "video_note", "sticker", "thumbnail",
    }
)  # fmt: skip
_FILE_PARAMS = frozenset(
    {"photo", "document", "audio", "video", "animation", "voice", "video_note", "sticker", "thumbnail"}
)
# Update kinds Telegram leaves out unless allowed_updates names them.
_OPT_IN_UPDATES = frozenset({"chat_member", "message_reaction", "message_reaction_count"})
_BLOCKABLE = frozenset({"sendMessage", "sendPhoto", "sendDocument", "sendMediaGroup", "copyMessage", "sendChatAction"})
_CONTENT_KEYS = ("text", "entities", "caption", "caption_entities", "reply_markup")
_COMMAND = re.compile(r"[a-z0-9_]{1,32}")
_SECRET = re.compile(r"[A-Za-z0-9_-]{1,256}")
_MAX_TEXT = 4096
_MAX_CAPTION = 1024
_MAX_CALLBACK_DATA = 64


class ApiError(Exception):
    """A Bot API error answer: HTTP status, description and optional ``parameters``."""

    def __init__(self, status: int, description: str, parameters: Json | None = None) -> None:
        super().__init__(description)
        self.status = status
        self.description = description
        self.parameters = parameters

    def payload(self) -> Json:
        body: Json = {"ok": False, "error_code": self.status, "description": self.description}
        if self.parameters:
            body["parameters"] = self.parameters
        return body


def bad_request(reason: str) -> ApiError:
    return ApiError(400, f"Bad Request: {reason}")


def telegram_error(status: int, *, retry_after: int = 1, description: str | None = None) -> ApiError:
    """The error Telegram answers with for ``status`` (429 carries ``retry_after``)."""
    if status == 429:
        text = description or f"Too Many Requests: retry after {retry_after}"
        return ApiError(429, text, {"retry_after": retry_after})
    return ApiError(status, description or _ERROR_DESCRIPTIONS.get(status, "Internal Server Error"))


@dataclass(frozen=True)
class Upload:
    """A file part of a multipart request."""

    name: str
    filename: str
    content_type: str
    content: bytes


@dataclass
class Call:
    """One request the bot made: ``status`` stays None while it is in flight (a long poll)."""

    method: str
    params: Json
    at: float
    uploads: Uploads = field(default_factory=dict)
    content_type: str = ""
    status: int | None = None  # 0: no answer, the connection was dropped (a stall or a reset)
    response: Json | None = None
    client_gone: bool = False  # the client hung up before the answer (a cancelled long poll, a timeout)
    via_webhook: bool = False  # the method came in the body of a webhook response, not as a request

    @property
    def done(self) -> bool:
        return self.status is not None

    @property
    def ok(self) -> bool:
        return self.status == 200

    @property
    def result(self) -> Any:
        return (self.response or {}).get("result")


@dataclass
class StoredFile:
    """A file the server can hand out through getFile and /file/bot<token>/<path>."""

    file_id: str
    file_unique_id: str
    content: bytes
    path: str
    file_name: str | None = None
    mime_type: str | None = None
    width: int = 1280
    height: int = 720
    kind: str = "document"  # "photo" or "document": Telegram will not send a document's file_id as a photo

    def as_file(self) -> Json:
        return {
            "file_id": self.file_id,
            "file_unique_id": self.file_unique_id,
            "file_size": len(self.content),
            "file_path": self.path,
        }

    def as_photo_size(self) -> Json:
        return {
            "file_id": self.file_id,
            "file_unique_id": self.file_unique_id,
            "width": self.width,
            "height": self.height,
            "file_size": len(self.content),
        }

    def as_document(self) -> Json:
        document: Json = {
            "file_id": self.file_id,
            "file_unique_id": self.file_unique_id,
            "file_size": len(self.content),
        }
        if self.file_name:
            document["file_name"] = self.file_name
        if self.mime_type:
            document["mime_type"] = self.mime_type
        return document


@dataclass(frozen=True)
class ShownMessage:
    """A message as a chat currently shows it: text (or caption) and inline keyboard."""

    message_id: int
    from_bot: bool
    text: str
    keyboard: tuple[tuple[Json, ...], ...]
    raw: Json

    @classmethod
    def of(cls, message: Json) -> ShownMessage:
        rows = message.get("reply_markup", {}).get("inline_keyboard", [])
        return cls(
            message_id=message["message_id"],
            from_bot=bool(message.get("from", {}).get("is_bot")),
            text=message.get("text") or message.get("caption") or "",
            keyboard=tuple(tuple(row) for row in rows),
            raw=copy.deepcopy(message),
        )

    def labels(self) -> list[str]:
        return [button["text"] for row in self.keyboard for button in row]

    def button(self, label: str) -> Json:
        for row in self.keyboard:
            for button in row:
                if button["text"] == label:
                    return button
        raise LookupError(f"no button {label!r} in message {self.message_id}; buttons: {self.labels()}")


@dataclass(frozen=True)
class Webhook:
    url: str
    secret_token: str | None


@dataclass
class _Fault:
    """An error answer, or with ``error`` None a dropped connection (after holding it ``stall`` seconds)."""

    error: ApiError | None
    remaining: int
    stall: float = 0.0


@dataclass
class _Queued:
    update: Json
    delivered: bool = False


# ---------------------------------------------------------------------------------------------------
# HTML parse mode


def utf16_len(text: str) -> int:
    """Length in UTF-16 code units, the unit of Telegram's entity offsets."""
    return len(text.encode("utf-16-le")) // 2


_HTML_ENTITY_TYPES = {
    "b": "bold", "strong": "bold", "i": "italic", "em": "italic", "u": "underline", "ins": "underline",
    "s": "strikethrough", "strike": "strikethrough", "del": "strikethrough", "tg-spoiler": "spoiler",
    "span": "spoiler", "a": "text_link", "code": "code", "pre": "pre", "blockquote": "blockquote",
    "tg-emoji": "custom_emoji",
}  # fmt: skip


@dataclass
class _OpenTag:
    name: str
    offset: int
    attrs: dict[str, str]


class _MarkupError(Exception):
    pass


class _TelegramHtml(HTMLParser):
    """Telegram's HTML style: the allowed tags become entities; anything else is refused."""

    def __init__(self, source: str) -> None:
        super().__init__(convert_charrefs=False)
        self._source = source
        self._line_starts = [0, *(m.end() for m in re.finditer("\n", source))]
        self._parts: list[str] = []
        self._length = 0
        self._open: list[_OpenTag] = []
        self.entities: list[Json] = []

    @property
    def text(self) -> str:
        return "".join(self._parts)

    def finish(self) -> None:
        self.close()
        if self._open:
            raise _MarkupError(f'Can\'t find end tag corresponding to start tag "{self._open[-1].name}"')

    def _byte_offset(self, extra: int = 0) -> int:
        line, column = self.getpos()
        index = self._line_starts[line - 1] + column + extra
        return len(self._source[:index].encode())

    def _append(self, text: str) -> None:
        self._parts.append(text)
        self._length += utf16_len(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {name: value or "" for name, value in attrs}
        if tag not in _HTML_ENTITY_TYPES:
            raise _MarkupError(f'Unsupported start tag "{tag}" at byte offset {self._byte_offset()}')
        if tag == "span" and attributes.get("class") != "tg-spoiler":
            raise _MarkupError(f'Tag "span" must have class "tg-spoiler" at byte offset {self._byte_offset()}')
        self._open.append(_OpenTag(tag, self._length, attributes))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        raise _MarkupError(f'Unsupported start tag "{tag}/" at byte offset {self._byte_offset()}')

    def handle_endtag(self, tag: str) -> None:
        if not self._open:
            raise _MarkupError(f"Unexpected end tag at byte offset {self._byte_offset()}")
        top = self._open.pop()
        if top.name != tag:
            raise _MarkupError(
                f'Unmatched end tag at byte offset {self._byte_offset()}, expected "</{top.name}>", found "</{tag}>"'
            )
        self._close(top)

    def handle_data(self, data: str) -> None:
        if "<" in data:
            offset = self._byte_offset(data.index("<"))
            raise _MarkupError(f'Unsupported start tag "" at byte offset {offset}')
        self._append(data)

    def handle_entityref(self, name: str) -> None:
        self._append(unescape(f"&{name};"))

    def handle_charref(self, name: str) -> None:
        self._append(unescape(f"&#{name};"))

    def handle_comment(self, data: str) -> None:
        raise _MarkupError(f'Unsupported start tag "!--" at byte offset {self._byte_offset()}')

    def handle_decl(self, decl: str) -> None:
        raise _MarkupError(f'Unsupported start tag "!{decl}" at byte offset {self._byte_offset()}')

    def _close(self, tag: _OpenTag) -> None:
        length = self._length - tag.offset
        parent = self._open[-1] if self._open else None
        if tag.name == "code" and parent and parent.name == "pre" and parent.offset == tag.offset:
            parent.attrs["language"] = tag.attrs.get("class", "").removeprefix("language-")
            return
        entity = self._entity(tag)
        if entity is not None and length > 0:
            self.entities.append({**entity, "offset": tag.offset, "length": length})

    @staticmethod
    def _entity(tag: _OpenTag) -> Json | None:
        kind = _HTML_ENTITY_TYPES[tag.name]
        if tag.name == "a":
            href = tag.attrs.get("href")
            return {"type": kind, "url": href} if href else None
        if tag.name == "blockquote" and "expandable" in tag.attrs:
            return {"type": "expandable_blockquote"}
        if tag.name == "tg-emoji":
            return {"type": kind, "custom_emoji_id": tag.attrs.get("emoji-id", "")}
        if tag.name == "pre" and tag.attrs.get("language"):
            return {"type": kind, "language": tag.attrs["language"]}
        return {"type": kind}


def parse_html(source: str) -> tuple[str, list[Json]]:
    """Plain text and entities for an HTML-formatted text, or Telegram's 400 for bad markup."""
    parser = _TelegramHtml(source)
    try:
        parser.feed(source)
        parser.finish()
    except _MarkupError as error:
        raise bad_request(f"can't parse entities: {error}") from None
    entities = sorted(parser.entities, key=lambda e: (e["offset"], -e["length"]))
    return parser.text, entities


# ---------------------------------------------------------------------------------------------------
# Request parameters


def decode_form_value(name: str, raw: str) -> Any:
    """A form value as the Bot API reads it: JSON unless the parameter is free text."""
    if name in _TEXT_PARAMS:
        return raw
    try:
        return json.loads(raw)
    except ValueError:
        return raw


async def read_params(request: web.Request) -> tuple[Json, Uploads]:
    """Query string plus a JSON, urlencoded or multipart body, as (params, file parts)."""
    params: Json = {name: decode_form_value(name, value) for name, value in request.query.items()}
    if request.content_type == "application/json":
        body = await request.json() if request.can_read_body else {}
        if not isinstance(body, dict):
            raise bad_request("JSON body must be an object")
        params.update(body)
        return params, {}
    uploads: Uploads = {}
    for name, value in (await request.post()).items():
        if isinstance(value, web.FileField):
            uploads[name] = Upload(name, value.filename, value.content_type, value.file.read())
            if name in _FILE_PARAMS:
                params[name] = f"attach://{name}"
        elif isinstance(value, str):
            params[name] = decode_form_value(name, value)
    return params, uploads


def _client_gone(request: web.Request) -> bool:
    return request.transport is None or request.transport.is_closing()


def _int(params: Json, name: str, default: int | None = None) -> int:
    value = params.get(name, default)
    if value is None:
        raise bad_request(f"{name} is empty")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise bad_request(f"invalid {name} specified") from None


def _bool(params: Json, name: str) -> bool:
    value = params.get(name, False)
    return value in (True, "true", "True", 1)


def _update_kind(update: Json) -> str:
    return next((key for key in update if key != "update_id"), "")


def _content_key(message: Json) -> tuple[Any, ...]:
    return tuple(message.get(key) for key in _CONTENT_KEYS)


def _validate_inline_keyboard(rows: Any) -> None:
    if not isinstance(rows, list) or not all(isinstance(row, list) for row in rows):
        raise bad_request('field "inline_keyboard" of the InlineKeyboardMarkup must be an Array of Arrays')
    for button in itertools.chain.from_iterable(rows):
        if not isinstance(button, dict) or not button.get("text"):
            raise bad_request("can't parse inline keyboard button: Text buttons are unallowed in the inline keyboard")
        data = button.get("callback_data")
        if data is not None and not 1 <= len(str(data).encode()) <= _MAX_CALLBACK_DATA:
            raise bad_request("BUTTON_DATA_INVALID")
        if len(button) < 2:
            raise bad_request("can't parse inline keyboard button: Text buttons are unallowed in the inline keyboard")


# ---------------------------------------------------------------------------------------------------
# The server


class BotApiServer:
    """An in-process Telegram Bot API for one bot token. See the module docstring."""

    def __init__(
        self,
        token: str = "123456:TEST",
        *,
        bot_id: int | None = None,
        username: str = "test_bot",
        first_name: str = "Test Bot",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.token = token
        prefix = token.split(":", 1)[0]
        self.bot_user: Json = {
            "id": bot_id if bot_id is not None else (int(prefix) if prefix.isdigit() else 1),
            "is_bot": True,
            "first_name": first_name,
            "username": username,
        }
        self.calls: list[Call] = []
        self.errors: list[BaseException] = []
        self.webhook: Webhook | None = None
        self._clock = clock
        self._runner: web.AppRunner | None = None
        self._client: ClientSession | None = None
        self._url: str | None = None
        self._closing = False
        self._changed = asyncio.Event()
        self._queue: list[_Queued] = []
        self._allowed_updates: frozenset[str] | None = None
        self._poll_ticket = 0
        self._update_ids = itertools.count(100_000_001)
        self._ids = itertools.count(1)
        self._faults: dict[str, list[_Fault]] = {}
        self._blocked: set[int] = set()
        self._users: dict[int, Json] = {}
        self._messages: dict[int, dict[int, Json]] = {}
        self._last_message_id: dict[int, int] = {}
        self._files: dict[str, StoredFile] = {}
        self._open_queries: set[str] = set()
        self._commands: dict[str, list[Json]] = {}
        self.descriptions: dict[tuple[str, str], str] = {}  # (description | short_description, language) → text
        self._methods: dict[str, tuple[str, MethodHandler]] = {
            name.lower(): (name, handler) for name, handler in self._method_table().items()
        }

    def _method_table(self) -> dict[str, MethodHandler]:
        return {
            "getMe": self._get_me,
            "setMyDescription": self._set_my_description,
            "getMyDescription": self._get_my_description,
            "setMyShortDescription": self._set_my_short_description,
            "getMyShortDescription": self._get_my_short_description,
            "getUpdates": self._get_updates,
            "sendMessage": self._send_message,
            "editMessageText": self._edit_message_text,
            "editMessageCaption": self._edit_message_caption,
            "editMessageReplyMarkup": self._edit_message_reply_markup,
            "deleteMessage": self._delete_message,
            "answerCallbackQuery": self._answer_callback_query,
            "sendChatAction": self._send_chat_action,
            "sendPhoto": self._send_photo,
            "sendDocument": self._send_document,
            "sendMediaGroup": self._send_media_group,
            "copyMessage": self._copy_message,
            "getFile": self._get_file,
            "setMyCommands": self._set_my_commands,
            "getMyCommands": self._get_my_commands,
            "deleteMyCommands": self._delete_my_commands,
            "setWebhook": self._set_webhook,
            "deleteWebhook": self._delete_webhook,
            "getWebhookInfo": self._get_webhook_info,
        }

    def supported_methods(self) -> list[str]:
        return [name for name, _ in self._methods.values()]

    # -- lifecycle ------------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        if self._url is None:
            raise RuntimeError("BotApiServer is not started")
        return self._url

    async def start(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/bot{token}/{method}", self._handle_method)
        app.router.add_get("/file/bot{token}/{path:.+}", self._handle_file)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        host, port = self._runner.addresses[0][:2]
        self._url = f"http://{host}:{port}"

    async def stop(self) -> None:
        self._closing = True
        self._notify()
        if self._client is not None:
            await self._client.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.stop()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def _wait_change(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), seconds)

    def _now(self) -> int:
        return int(self._clock())

    # -- HTTP -----------------------------------------------------------------------------------------

    async def _handle_method(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != self.token:
            return web.json_response(telegram_error(401).payload(), status=401)
        name = request.match_info["method"]
        known = self._methods.get(name.lower())
        try:
            params, uploads = await read_params(request)
        except ApiError as error:
            return web.json_response(error.payload(), status=error.status)
        call = Call(known[0] if known else name, params, self._clock(), uploads, request.content_type)
        self.calls.append(call)
        self._notify()
        fault = self._take_fault(call.method, connection=True) if known else None
        if fault is not None and fault.error is None:
            await self._drop(request, call, fault.stall)
            return web.Response(status=500)  # never reaches the client: its connection is gone
        status, body = await self._answer(call, known[1] if known else None, fault.error if fault else None)
        call.status, call.response = status, body
        call.client_gone = _client_gone(request)
        self._notify()
        return web.json_response(body, status=status)

    async def _drop(self, request: web.Request, call: Call, stall: float) -> None:
        """Hold the call ``stall`` seconds (less if the client gives up), then drop the connection with a TCP
        reset, unprocessed."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + stall
        while loop.time() < deadline and not _client_gone(request) and not self._closing:
            await self._wait_change(min(0.05, deadline - loop.time()))  # no event tells of a client hanging up
        call.client_gone = _client_gone(request)
        call.status = 0
        self._notify()
        transport = request.transport
        if transport is not None and not transport.is_closing():
            sock = transport.get_extra_info("socket")
            if sock is not None:  # no lingering: closing sends RST, as a crashed proxy's connection does
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            transport.abort()

    async def _answer(self, call: Call, handler: MethodHandler | None, fault: ApiError | None = None
                      ) -> tuple[int, Json]:
        try:
            if handler is None:
                raise ApiError(404, "Not Found: method not found")
            if fault is not None:
                raise fault
            self._check_blocked(call)
            result = await handler(call.params, call.uploads)
        except ApiError as error:
            return error.status, error.payload()
        except Exception as error:  # a bug in this server: answer loudly, keep it for the test
            self.errors.append(error)
            return 500, ApiError(500, f"Internal Server Error: test server failed: {error!r}").payload()
        return 200, {"ok": True, "result": result}

    def _take_fault(self, method: str, *, connection: bool) -> _Fault | None:
        """The fault the next ``method`` call meets, if any (one without a connection, a method named in a
        webhook answer, meets only error answers)."""
        faults = self._faults.get(method.lower())
        if not faults or (faults[0].error is None and not connection):
            return None
        fault = faults[0]
        fault.remaining -= 1
        if fault.remaining <= 0:
            faults.pop(0)
        return fault

    def _check_blocked(self, call: Call) -> None:
        chat_id = str(call.params.get("chat_id", ""))
        if call.method in _BLOCKABLE and chat_id.lstrip("-").isdigit() and int(chat_id) in self._blocked:
            raise telegram_error(403)

    async def _handle_file(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != self.token:
            return web.json_response(telegram_error(401).payload(), status=401)
        stored = next((f for f in self._files.values() if f.path == request.match_info["path"]), None)
        if stored is None:
            return web.json_response(telegram_error(404).payload(), status=404)
        return web.Response(body=stored.content, content_type="application/octet-stream")

    # -- fault injection --------------------------------------------------------------------------------

    def fail_next(
        self,
        method: str,
        status: int = 429,
        retry_after: int = 1,
        count: int = 1,
        *,
        description: str | None = None,
    ) -> None:
        """Answer the next ``count`` calls of ``method`` with Telegram's error for ``status``."""
        error = telegram_error(status, retry_after=retry_after, description=description)
        self._faults.setdefault(method.lower(), []).append(_Fault(error, count))

    def stall_next(self, method: str, seconds: float, count: int = 1) -> None:
        """Hold the next ``count`` calls of ``method`` unanswered for ``seconds`` (or until the client gives up,
        as on its timeout), then drop their connections; they are not processed."""
        self._faults.setdefault(method.lower(), []).append(_Fault(None, count, stall=seconds))

    def reset_next(self, method: str, count: int = 1) -> None:
        """Drop the connection of the next ``count`` calls of ``method`` at once (a TCP reset, no answer); they
        are not processed."""
        self._faults.setdefault(method.lower(), []).append(_Fault(None, count))

    def block(self, chat_id: int) -> None:
        """Every send to ``chat_id`` answers 403 "bot was blocked by the user" until ``unblock``."""
        self._blocked.add(chat_id)

    def unblock(self, chat_id: int) -> None:
        self._blocked.discard(chat_id)

    # -- recorded calls -----------------------------------------------------------------------------------

    def unconfirmed(self) -> list[int]:
        """The ids of the updates no getUpdates offset has confirmed yet (handed out or not)."""
        return sorted(queued.update["update_id"] for queued in self._queue)

    def calls_of(self, method: str) -> list[Call]:
        return [call for call in self.calls if call.method.lower() == method.lower()]

    async def wait_for(
        self,
        predicate: CallPredicate,
        timeout: float = 10.0,  # noqa: ASYNC109 - the documented test-helper signature
        *,
        since: int = 0,
        finished: bool = True,
    ) -> Call:
        """The first call (from index ``since``) matching ``predicate``, waiting up to ``timeout``.

        Only answered calls are considered unless ``finished`` is False (then an in-flight long poll
        matches too).
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            for call in self.calls[since:]:
                if (call.done or not finished) and predicate(call):
                    return call
            remaining = deadline - loop.time()
            if remaining <= 0:
                seen = [f"{c.method}:{c.status}" for c in self.calls[since:]]
                raise TimeoutError(f"no matching call within {timeout}s; calls so far: {seen}")
            await self._wait_change(remaining)

    async def wait_for_call(
        self,
        method: str,
        *,
        since: int = 0,
        timeout: float = 10.0,  # noqa: ASYNC109 - the documented test-helper signature
        **params: Any,
    ) -> Call:
        """The first answered ``method`` call whose params include ``params``."""

        def matches(call: Call) -> bool:
            same = call.method.lower() == method.lower()
            return same and all(call.params.get(key) == value for key, value in params.items())

        return await self.wait_for(matches, timeout, since=since)

    # -- chats as the user sees them ----------------------------------------------------------------------

    def chat_messages(self, chat_id: int) -> list[ShownMessage]:
        """The messages chat ``chat_id`` shows now, oldest first (edits applied, deletions gone)."""
        return [ShownMessage.of(message) for message in self._messages.get(chat_id, {}).values()]

    def last_bot_message(self, chat_id: int) -> ShownMessage:
        shown = [message for message in self.chat_messages(chat_id) if message.from_bot]
        if not shown:
            raise LookupError(f"the bot has no message in chat {chat_id}")
        return shown[-1]

    def my_commands(self, scope: Json | None = None, language_code: str = "") -> list[Json]:
        return copy.deepcopy(self._commands.get(self._commands_key(scope, language_code), []))

    # -- files ----------------------------------------------------------------------------------------

    def add_file(
        self,
        file_id: str,
        content: bytes,
        file_unique_id: str | None = None,
        path: str | None = None,
        *,
        file_name: str | None = None,
        mime_type: str | None = None,
        width: int = 1280,
        height: int = 720,
        kind: str = "document",
    ) -> StoredFile:
        """Register a file (a "document" unless ``kind`` says "photo") the bot can fetch with getFile and
        download, or send by ``file_id``."""
        number = next(self._ids)
        stored = StoredFile(
            file_id=file_id,
            file_unique_id=file_unique_id or f"AQAD{number:08d}",
            content=content,
            path=path or f"documents/file_{number}",
            file_name=file_name,
            mime_type=mime_type,
            width=width,
            height=height,
            kind=kind,
        )
        self._files[file_id] = stored
        return stored

    def _new_file(
        self,
        content: bytes,
        folder: str,
        *,
        file_id: str | None = None,
        file_name: str | None = None,
        **extra: Any,
    ) -> StoredFile:
        number = next(self._ids)
        prefix = "AgAC" if folder == "photos" else "BQAC"
        suffix = f".{file_name.rsplit('.', 1)[-1]}" if file_name and "." in file_name else ""
        path = f"{folder}/file_{number}{suffix}"
        file_id = file_id or f"{prefix}{number:08d}"
        kind = "photo" if folder == "photos" else "document"
        return self.add_file(file_id, content, path=path, file_name=file_name, kind=kind, **extra)

    def _store_upload(self, upload: Upload, folder: str) -> StoredFile:
        mime = mimetypes.guess_type(upload.filename)[0] or upload.content_type or "application/octet-stream"
        return self._new_file(upload.content, folder, file_name=upload.filename, mime_type=mime)

    def _input_file(self, value: Any, uploads: Uploads, folder: str) -> StoredFile:
        """The file an InputFile parameter names: an attached part, a URL or a known file_id."""
        if not isinstance(value, str):
            raise bad_request(WRONG_FILE)
        if value.startswith("attach://"):
            upload = uploads.get(value.removeprefix("attach://"))
            if upload is None:
                raise bad_request(WRONG_FILE)
            return self._store_upload(upload, folder)
        if value.startswith(("http://", "https://")):
            name = value.rsplit("/", 1)[-1] or "file"
            return self._new_file(b"", folder, file_name=name, mime_type=mimetypes.guess_type(name)[0])
        if value in self._files:
            return self._files[value]
        raise bad_request(WRONG_FILE)

    # -- chats, users and message storage -------------------------------------------------------------------

    def add_user(
        self,
        user_id: int,
        first_name: str | None = None,
        *,
        last_name: str | None = None,
        username: str | None = None,
        language_code: str = "en",
    ) -> Json:
        """Register (or replace) the profile used in updates from ``user_id``."""
        user: Json = {"id": user_id, "is_bot": False, "first_name": first_name or f"User{user_id}"}
        if last_name:
            user["last_name"] = last_name
        if username:
            user["username"] = username
        user["language_code"] = language_code
        self._users[user_id] = user
        return user

    def _sender(self, user_id: int, language_code: str | None = None) -> Json:
        user = dict(self._users.get(user_id) or self.add_user(user_id))
        if language_code:
            user["language_code"] = language_code
        return user

    def _chat(self, chat_id: int) -> Json:
        if chat_id < 0:
            kind = "supergroup" if str(chat_id).startswith("-100") else "group"
            return {"id": chat_id, "type": kind, "title": f"Chat {chat_id}"}
        user = self._users.get(chat_id) or {"first_name": f"User{chat_id}"}
        chat: Json = {"id": chat_id, "type": "private"}
        chat.update({key: user[key] for key in ("first_name", "last_name", "username") if key in user})
        return chat

    def _chat_id(self, params: Json, name: str = "chat_id") -> int:
        value = params.get(name)
        if isinstance(value, str) and not value.lstrip("-").isdigit():
            raise bad_request("chat not found")
        return _int(params, name)

    def _next_message_id(self, chat_id: int) -> int:
        self._last_message_id[chat_id] = self._last_message_id.get(chat_id, 0) + 1
        return self._last_message_id[chat_id]

    def _store_message(self, chat_id: int, sender: Json, content: Json) -> Json:
        message: Json = {
            "message_id": self._next_message_id(chat_id),
            "from": sender,
            "chat": self._chat(chat_id),
            "date": self._now(),
            **content,
        }
        self._messages.setdefault(chat_id, {})[message["message_id"]] = message
        return message

    def _find_message(self, chat_id: int, message_id: int, missing: str) -> Json:
        message = self._messages.get(chat_id, {}).get(message_id)
        if message is None:
            raise bad_request(missing)
        return message

    def _bot_message(self, params: Json, missing: str) -> Json:
        message = self._find_message(self._chat_id(params), _int(params, "message_id"), missing)
        if not message["from"].get("is_bot"):
            raise bad_request("message can't be edited")
        return message

    def _post(self, params: Json, content: Json) -> Json:
        """Store a bot message built from ``content`` plus the common send parameters."""
        chat_id = self._chat_id(params)
        draft: Json = dict(content)
        self._apply_markup(draft, params.get("reply_markup"))
        reply_to = self._reply_target(chat_id, params)
        if reply_to is not None:
            draft["reply_to_message"] = reply_to
        return copy.deepcopy(self._store_message(chat_id, dict(self.bot_user), draft))

    def _reply_target(self, chat_id: int, params: Json) -> Json | None:
        reply = params.get("reply_parameters")
        message_id = reply.get("message_id") if isinstance(reply, dict) else params.get("reply_to_message_id")
        if message_id is None:
            return None
        target = self._find_message(chat_id, int(message_id), "message to be replied not found")
        return {key: value for key, value in target.items() if key != "reply_to_message"}

    @staticmethod
    def _apply_markup(message: Json, markup: Any) -> None:
        """Telegram echoes only inline keyboards in Message.reply_markup."""
        if markup is None:
            message.pop("reply_markup", None)
            return
        if not isinstance(markup, dict):
            raise bad_request("can't parse reply keyboard markup JSON object")
        if "inline_keyboard" not in markup:
            message.pop("reply_markup", None)
            return
        _validate_inline_keyboard(markup["inline_keyboard"])
        message["reply_markup"] = {"inline_keyboard": markup["inline_keyboard"]}

    @staticmethod
    def _formatted(text: str, parse_mode: Any, entities: Any) -> tuple[str, list[Json]]:
        if isinstance(parse_mode, str) and parse_mode.lower() == "html":
            return parse_html(text)
        return text, list(entities or [])

    def _text_content(self, params: Json) -> Json:
        text, entities = self._formatted(
            str(params.get("text") or ""), params.get("parse_mode"), params.get("entities")
        )
        if not text.strip():
            raise bad_request("message text is empty")
        if utf16_len(text) > _MAX_TEXT:
            raise bad_request("message is too long")
        return {"text": text, "entities": entities} if entities else {"text": text}

    def _caption_content(self, params: Json) -> Json:
        if params.get("caption") is None:
            return {}
        caption, entities = self._formatted(
            str(params["caption"]), params.get("parse_mode"), params.get("caption_entities")
        )
        if utf16_len(caption) > _MAX_CAPTION:
            raise bad_request("message caption is too long")
        content: Json = {"caption": caption} if caption else {}
        if entities:
            content["caption_entities"] = entities
        return content

    def _edit(self, message: Json, change: Callable[[Json], None]) -> Json:
        draft = copy.deepcopy(message)
        change(draft)
        if _content_key(draft) == _content_key(message):
            raise bad_request(NOT_MODIFIED)
        draft["edit_date"] = self._now()
        message.clear()
        message.update(draft)
        return copy.deepcopy(message)

    # -- Bot API methods --------------------------------------------------------------------------------

    async def _get_me(self, params: Json, uploads: Uploads) -> Json:
        return {
            **self.bot_user,
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
            "can_connect_to_business": False,
            "has_main_web_app": False,
        }

    async def _get_updates(self, params: Json, uploads: Uploads) -> list[Json]:
        if self.webhook is not None:
            raise ApiError(409, WEBHOOK_CONFLICT)
        limit = max(1, min(100, _int(params, "limit", 100)))
        timeout = max(0.0, float(params.get("timeout") or 0))
        self._set_allowed_updates(params.get("allowed_updates"))
        self._confirm(_int(params, "offset", 0))
        self._poll_ticket += 1
        ticket = self._poll_ticket
        self._notify()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            ready = self._take_pending(limit)
            if ready or self._closing:
                return ready
            if ticket != self._poll_ticket:
                raise ApiError(409, POLL_CONFLICT)
            remaining = deadline - loop.time()
            if remaining <= 0:
                return []
            await self._wait_change(remaining)

    def _set_allowed_updates(self, allowed: Any) -> None:
        if isinstance(allowed, list):
            self._allowed_updates = frozenset(allowed) if allowed else None

    def _allowed(self, update: Json) -> bool:
        kind = _update_kind(update)
        if self._allowed_updates is None:
            return kind not in _OPT_IN_UPDATES
        return kind in self._allowed_updates

    def _confirm(self, offset: int) -> None:
        """Forget delivered updates below ``offset``; a negative offset keeps only the last -offset."""
        if offset < 0:
            keep = {id(q) for q in sorted(self._queue, key=lambda q: q.update["update_id"])[offset:]}
            self._queue = [queued for queued in self._queue if id(queued) in keep]
        elif offset > 0:
            self._queue = [q for q in self._queue if not (q.delivered and q.update["update_id"] < offset)]

    def _take_pending(self, limit: int) -> list[Json]:
        self._queue = [queued for queued in self._queue if self._allowed(queued.update)]
        batch = sorted(self._queue, key=lambda q: q.update["update_id"])[:limit]
        for queued in batch:
            queued.delivered = True
        return [copy.deepcopy(queued.update) for queued in batch]

    async def _send_message(self, params: Json, uploads: Uploads) -> Json:
        return self._post(params, self._text_content(params))

    async def _edit_message_text(self, params: Json, uploads: Uploads) -> Json | bool:
        if params.get("inline_message_id"):
            return True
        message = self._bot_message(params, "message to edit not found")
        if "text" not in message:
            raise bad_request("there is no text in the message to edit")
        content = self._text_content(params)

        def change(draft: Json) -> None:
            draft.pop("entities", None)
            draft.update(content)
            self._apply_markup(draft, params.get("reply_markup"))

        return self._edit(message, change)

    async def _edit_message_caption(self, params: Json, uploads: Uploads) -> Json | bool:
        if params.get("inline_message_id"):
            return True
        message = self._bot_message(params, "message to edit not found")
        content = self._caption_content(params)

        def change(draft: Json) -> None:
            draft.pop("caption", None)
            draft.pop("caption_entities", None)
            draft.update(content)
            self._apply_markup(draft, params.get("reply_markup"))

        return self._edit(message, change)

    async def _edit_message_reply_markup(self, params: Json, uploads: Uploads) -> Json | bool:
        if params.get("inline_message_id"):
            return True
        message = self._bot_message(params, "message to edit not found")
        return self._edit(message, lambda draft: self._apply_markup(draft, params.get("reply_markup")))

    async def _delete_message(self, params: Json, uploads: Uploads) -> bool:
        chat_id = self._chat_id(params)
        message_id = _int(params, "message_id")
        self._find_message(chat_id, message_id, "message to delete not found")
        del self._messages[chat_id][message_id]
        return True

    async def _answer_callback_query(self, params: Json, uploads: Uploads) -> bool:
        query_id = str(params.get("callback_query_id") or "")
        if query_id not in self._open_queries:
            raise bad_request("query is too old and response timeout expired or query ID is invalid")
        self._open_queries.discard(query_id)
        return True

    async def _send_chat_action(self, params: Json, uploads: Uploads) -> bool:
        self._chat_id(params)
        return True

    async def _send_photo(self, params: Json, uploads: Uploads) -> Json:
        stored = self._input_file(params.get("photo"), uploads, "photos")
        if stored.kind != "photo":
            raise bad_request(DOCUMENT_AS_PHOTO)
        return self._post(params, {"photo": [stored.as_photo_size()], **self._caption_content(params)})

    async def _send_document(self, params: Json, uploads: Uploads) -> Json:
        stored = self._input_file(params.get("document"), uploads, "documents")
        return self._post(params, {"document": stored.as_document(), **self._caption_content(params)})

    async def _send_media_group(self, params: Json, uploads: Uploads) -> list[Json]:
        media = params.get("media")
        if not isinstance(media, list) or not 2 <= len(media) <= 10:
            raise bad_request(ALBUM_SIZE)
        kinds = {item.get("type") if isinstance(item, dict) else None for item in media}
        if "document" in kinds and len(kinds) > 1:
            raise bad_request(ALBUM_MIXED)
        items = [self._album_item(number, item, uploads) for number, item in enumerate(media, start=1)]
        group_id = str(next(self._ids))
        return [self._post(params, {**item, "media_group_id": group_id}) for item in items]

    def _album_item(self, number: int, item: Any, uploads: Uploads) -> Json:
        kind = item.get("type") if isinstance(item, dict) else None
        if kind not in ("photo", "document"):
            raise bad_request(f"this test server only supports photo and document albums, not {kind!r}")
        folder = "photos" if kind == "photo" else "documents"
        try:
            stored = self._input_file(item.get("media"), uploads, folder)
        except ApiError:
            raise bad_request(f'Failed to send message #{number} with the error message "{WRONG_FILE}"') from None
        if kind == "photo" and stored.kind != "photo":
            raise bad_request(f'Failed to send message #{number} with the error message "{WRONG_FILE}"')
        body = [stored.as_photo_size()] if kind == "photo" else stored.as_document()
        return {kind: body, **self._caption_content(item)}

    async def _copy_message(self, params: Json, uploads: Uploads) -> Json:
        source = self._find_message(
            self._chat_id(params, "from_chat_id"), _int(params, "message_id"), "message to copy not found"
        )
        content = {
            key: copy.deepcopy(source[key]) for key in ("text", "entities", "photo", "document") if key in source
        }
        if "text" not in source:
            caption = self._caption_content(params) if "caption" in params else None
            content.update(caption if caption is not None else self._copied_caption(source))
        copied = self._post(params, content)
        return {"message_id": copied["message_id"]}

    @staticmethod
    def _copied_caption(source: Json) -> Json:
        return {key: copy.deepcopy(source[key]) for key in ("caption", "caption_entities") if key in source}

    async def _get_file(self, params: Json, uploads: Uploads) -> Json:
        stored = self._files.get(str(params.get("file_id") or ""))
        if stored is None:
            raise bad_request("invalid file_id")
        return stored.as_file()

    @staticmethod
    def _commands_key(scope: Any, language_code: Any) -> str:
        return json.dumps([scope or {"type": "default"}, language_code or ""], sort_keys=True)

    async def _set_my_commands(self, params: Json, uploads: Uploads) -> bool:
        commands = params.get("commands")
        if not isinstance(commands, list):
            raise bad_request("can't parse commands JSON object")
        for command in commands:
            if not isinstance(command, dict) or not _COMMAND.fullmatch(str(command.get("command", ""))):
                raise bad_request("BOT_COMMAND_INVALID")
        self._commands[self._commands_key(params.get("scope"), params.get("language_code"))] = commands
        return True

    async def _set_my_description(self, params: Json, uploads: Uploads) -> bool:
        return self._set_description("description", params, 512)

    async def _set_my_short_description(self, params: Json, uploads: Uploads) -> bool:
        return self._set_description("short_description", params, 120)

    def _set_description(self, field: str, params: Json, limit: int) -> bool:
        value = str(params.get(field) or "")
        if len(value) > limit:
            raise bad_request(f"{field.upper()}_INVALID")
        self.descriptions[(field, str(params.get("language_code") or ""))] = value
        return True

    async def _get_my_description(self, params: Json, uploads: Uploads) -> Json:
        return {"description": self.descriptions.get(("description", str(params.get("language_code") or "")), "")}

    async def _get_my_short_description(self, params: Json, uploads: Uploads) -> Json:
        key = ("short_description", str(params.get("language_code") or ""))
        return {"short_description": self.descriptions.get(key, "")}

    async def _get_my_commands(self, params: Json, uploads: Uploads) -> list[Json]:
        return self.my_commands(params.get("scope"), params.get("language_code") or "")

    async def _delete_my_commands(self, params: Json, uploads: Uploads) -> bool:
        self._commands.pop(self._commands_key(params.get("scope"), params.get("language_code")), None)
        return True

    async def _set_webhook(self, params: Json, uploads: Uploads) -> bool:
        url = str(params.get("url") or "")
        secret = params.get("secret_token")
        if secret is not None and not _SECRET.fullmatch(str(secret)):
            raise bad_request("secret token contains unallowed characters")
        if _bool(params, "drop_pending_updates"):
            self._queue.clear()
        self._set_allowed_updates(params.get("allowed_updates"))
        self.webhook = Webhook(url, str(secret) if secret is not None else None) if url else None
        self._notify()
        return True

    async def _delete_webhook(self, params: Json, uploads: Uploads) -> bool:
        if _bool(params, "drop_pending_updates"):
            self._queue.clear()
        self.webhook = None
        return True

    async def _get_webhook_info(self, params: Json, uploads: Uploads) -> Json:
        info: Json = {
            "url": self.webhook.url if self.webhook else "",
            "has_custom_certificate": False,
            "pending_update_count": len(self._queue),
        }
        if self.webhook:
            info["max_connections"] = 40
        if self._allowed_updates is not None:
            info["allowed_updates"] = sorted(self._allowed_updates)
        return info

    # -- updates: what users do -----------------------------------------------------------------------

    def enqueue(self, update: Json) -> Json:
        """Queue a raw update for getUpdates (an ``update_id`` is added if missing).

        Enqueueing an update that was already delivered delivers it again, as after a crash.
        """
        if "update_id" not in update:
            update = {"update_id": next(self._update_ids), **update}
        self._queue.append(_Queued(copy.deepcopy(update)))
        self._notify()
        return update

    def _user_message(self, user_id: int, language_code: str | None, content: Json) -> Json:
        message = self._store_message(user_id, self._sender(user_id, language_code), content)
        return self.enqueue({"message": copy.deepcopy(message)})

    def user_sends_text(self, user_id: int, text: str, language_code: str | None = None,
                        entities: list[Json] | None = None) -> Json:
        """The user types ``text`` in the private chat; a leading /command gets its bot_command entity, and
        ``entities`` (bold, links, ...) are the formatting the user gave it."""
        content: Json = {"text": text}
        found: list[Json] = []
        if text.startswith("/") and len(text) > 1:
            command = text.split(maxsplit=1)[0]
            found.append({"type": "bot_command", "offset": 0, "length": utf16_len(command)})
        if found or entities:
            content["entities"] = [*found, *(entities or [])]
        return self._user_message(user_id, language_code, content)

    def user_sends_photo(
        self,
        user_id: int,
        content: bytes = b"\xff\xd8\xff\xe0photo",
        *,
        caption: str | None = None,
        file_id: str | None = None,
        width: int = 1280,
        height: int = 720,
        language_code: str | None = None,
    ) -> Json:
        """The user sends a photo: two PhotoSize entries (thumbnail, full), both downloadable."""
        full = self._new_file(content, "photos", file_id=file_id, width=width, height=height)
        thumb_height = max(1, height * 90 // max(width, 1))
        thumb = self._new_file(content[:64], "photos", width=90, height=thumb_height)
        body: Json = {"photo": [thumb.as_photo_size(), full.as_photo_size()]}
        if caption:
            body["caption"] = caption
        return self._user_message(user_id, language_code, body)

    def user_sends_document(
        self,
        user_id: int,
        content: bytes = b"%PDF-1.4 document",
        *,
        file_name: str = "document.pdf",
        mime_type: str | None = None,
        caption: str | None = None,
        file_id: str | None = None,
        language_code: str | None = None,
    ) -> Json:
        """The user sends a file as a document."""
        mime = mime_type or mimetypes.guess_type(file_name)[0] or "application/octet-stream"
        stored = self._new_file(content, "documents", file_id=file_id, file_name=file_name, mime_type=mime)
        body: Json = {"document": stored.as_document()}
        if caption:
            body["caption"] = caption
        return self._user_message(user_id, language_code, body)

    def user_presses(self, user_id: int, message_id: int, data: str, language_code: str | None = None) -> Json:
        """The user taps an inline button with callback ``data`` under message ``message_id``."""
        message = self._messages.get(user_id, {}).get(message_id)
        if message is None:
            raise LookupError(f"chat {user_id} shows no message {message_id}")
        query_id = str(next(self._ids) * 7_919_000_003)
        self._open_queries.add(query_id)
        query = {
            "id": query_id,
            "from": self._sender(user_id, language_code),
            "message": copy.deepcopy(message),
            "chat_instance": str(4_000_000_000 + user_id),
            "data": data,
        }
        return self.enqueue({"callback_query": query})

    def user_presses_button(self, user_id: int, label: str, message_id: int | None = None) -> Json:
        """Tap the callback button labelled ``label`` (in the bot's last message unless ``message_id``)."""
        shown = (
            self.last_bot_message(user_id)
            if message_id is None
            else ShownMessage.of(self._find_message(user_id, message_id, "no such message"))
        )
        button = shown.button(label)
        if "callback_data" not in button:
            raise LookupError(f"button {label!r} has no callback_data: {button}")
        return self.user_presses(user_id, shown.message_id, button["callback_data"])

    def _membership_update(self, user_id: int, old: str, new: str) -> Json:
        def member(status: str) -> Json:
            body: Json = {"user": dict(self.bot_user), "status": status}
            if status == "kicked":
                body["until_date"] = 0
            return body

        change = {
            "chat": self._chat(user_id),
            "from": self._sender(user_id),
            "date": self._now(),
            "old_chat_member": member(old),
            "new_chat_member": member(new),
        }
        return self.enqueue({"my_chat_member": change})

    def user_blocks_bot(self, user_id: int) -> Json:
        """The user blocks the bot: a my_chat_member update, and later sends answer 403."""
        self.block(user_id)
        return self._membership_update(user_id, "member", "kicked")

    def user_unblocks_bot(self, user_id: int) -> Json:
        self.unblock(user_id)
        return self._membership_update(user_id, "kicked", "member")

    # -- webhook delivery -----------------------------------------------------------------------------

    async def push_update_to_webhook(self, update: Json) -> int:
        """POST ``update`` to the webhook set with setWebhook; returns the receiver's HTTP status.

        A 2xx answer confirms the update (it leaves the pending queue, if it was queued).
        """
        if self.webhook is None:
            raise RuntimeError("no webhook is set; call setWebhook first")
        headers = {SECRET_HEADER: self.webhook.secret_token} if self.webhook.secret_token else {}
        if self._client is None:
            self._client = ClientSession(timeout=ClientTimeout(total=10))
        async with self._client.post(self.webhook.url, json=update, headers=headers) as response:
            status = response.status
            text = await response.text()
        if 200 <= status < 300:
            self._queue = [q for q in self._queue if q.update.get("update_id") != update.get("update_id")]
            await self._run_webhook_reply(text)
        return status

    async def _run_webhook_reply(self, text: str) -> None:
        """Do the one method a webhook may name in its 2xx answer, as Telegram does: recorded as a call (with
        ``via_webhook``); its result goes nowhere, since Telegram cannot tell the receiver how it went."""
        try:
            body = json.loads(text) if text else None
        except ValueError:
            return
        if not isinstance(body, dict) or not isinstance(body.get("method"), str):
            return
        params = {key: value for key, value in body.items() if key != "method"}
        known = self._methods.get(body["method"].lower())
        call = Call(known[0] if known else body["method"], params, self._clock(), via_webhook=True)
        self.calls.append(call)
        self._notify()
        fault = self._take_fault(call.method, connection=False) if known else None
        call.status, call.response = await self._answer(call, known[1] if known else None,
                                                        fault.error if fault else None)
        self._notify()

    async def push_pending_to_webhook(self) -> list[int]:
        """Deliver the queued updates in order, stopping at the first non-2xx answer."""
        statuses: list[int] = []
        for queued in sorted(self._queue, key=lambda q: q.update["update_id"]):
            statuses.append(await self.push_update_to_webhook(queued.update))
            if not 200 <= statuses[-1] < 300:
                break
        return statuses
