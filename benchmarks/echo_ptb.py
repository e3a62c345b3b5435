"""The baseline for the end-to-end section: a minimal python-telegram-bot echo bot, polling.

Reads TELEGRAM_BOT_TOKEN and TELEGRAM_API_URL like `recovery-bot run`; answers every text with the same text.
Updates are handled one at a time (python-telegram-bot's default, and its fastest mode here).
"""

from __future__ import annotations

import os

from telegram import Update
from telegram.ext import ApplicationBuilder, ContextTypes, MessageHandler, filters


async def echo(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    message = update.effective_message
    if message is not None and message.text is not None:
        await context.bot.send_message(message.chat_id, message.text)


def main() -> None:
    url = os.environ.get("TELEGRAM_API_URL", "https://api.telegram.org").rstrip("/")
    application = (ApplicationBuilder().token(os.environ["TELEGRAM_BOT_TOKEN"])
                   .base_url(f"{url}/bot").base_file_url(f"{url}/file/bot").build())
    application.add_handler(MessageHandler(filters.TEXT, echo))
    application.run_polling(allowed_updates=Update.ALL_TYPES)


if __name__ == "__main__":
    main()
