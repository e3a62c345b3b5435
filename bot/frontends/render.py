"""Limits of Telegram messages, applied the same way by both front ends."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

MESSAGE_LIMIT = 4096


async def send_in_pieces(text: str, send: Callable[[str, bool], Awaitable[int]]) -> int:
    """Send a text too long for one message as several; `send(piece, is_last)` returns the message id, and the
    caller puts the keyboard on the last piece. Returns the last message's id."""
    pieces = split_text(text)
    message_id = 0
    for index, piece in enumerate(pieces):
        message_id = await send(piece, index == len(pieces) - 1)
    return message_id


def utf16_length(text: str) -> int:
    """Length as Telegram counts it (UTF-16 code units)."""
    return len(text.encode("utf-16-le")) // 2


def split_text(text: str, limit: int = MESSAGE_LIMIT) -> list[str]:
    """Pieces of at most `limit` UTF-16 units, cut at paragraph, then line, then word boundaries."""
    if utf16_length(text) <= limit:
        return [text]
    pieces: list[str] = []
    rest = text
    while utf16_length(rest) > limit:
        cut = _cut_point(rest, limit)
        pieces.append(rest[:cut].rstrip())
        rest = rest[cut:].lstrip("\n ")
    return [*pieces, rest] if rest else pieces


def _cut_point(text: str, limit: int) -> int:
    end = len(text)
    while utf16_length(text[:end]) > limit:
        end -= max(1, (utf16_length(text[:end]) - limit) // 2)
    window = text[:end]
    for separator in ("\n\n", "\n", " "):
        at = window.rfind(separator)
        if at > end // 2:
            return at + len(separator)
    return end
