"""Telegram front ends: python-telegram-bot and aiogram, translating updates to events and replies to calls."""
