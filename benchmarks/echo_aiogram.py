"""The baseline for the end-to-end section: a minimal aiogram echo bot, polling.

Reads TELEGRAM_BOT_TOKEN and TELEGRAM_API_URL like `recovery-bot run`; answers every text with the same text.
"""

from __future__ import annotations

import asyncio
import os

from aiogram import Bot, Dispatcher, F
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.types import Message


async def main() -> None:
    url = os.environ.get("TELEGRAM_API_URL", "https://api.telegram.org").rstrip("/")
    bot = Bot(os.environ["TELEGRAM_BOT_TOKEN"], session=AiohttpSession(api=TelegramAPIServer.from_base(url)))
    dispatcher = Dispatcher()

    @dispatcher.message(F.text)
    async def echo(message: Message) -> None:
        await bot.send_message(message.chat.id, message.text or "")

    await dispatcher.start_polling(bot, handle_signals=True)


if __name__ == "__main__":
    asyncio.run(main())
