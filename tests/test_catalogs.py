"""Every catalog is complete and safe to show: the same keys as English, the same placeholders and markup, every
plural form, labels within Telegram's limits, no key the code does not use, and buttons that do the same in every
language (README, "Adding a language")."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from babel.messages.catalog import Catalog, Message
from babel.messages.pofile import read_po

from flows.texts import DEFAULT_LANGUAGE, LOCALES, languages, template, translate

ROOT = Path(__file__).resolve().parents[1]
OTHERS = sorted(languages() - {DEFAULT_LANGUAGE})
LABELS = re.compile(r"(^|\.)btn_|^menu\.(phone|reverify|backup)$|^language\.name_|^review\.reason_")
LABEL_LIMIT = 64  # characters: a phone cuts a longer button label short (Telegram sets no hard limit)
COMMAND_LIMIT = 256  # Telegram's limit for a command's description
SERVICE = "Example Exchange"


def catalog(language: str) -> Catalog:
    with (LOCALES / language / "LC_MESSAGES" / "messages.po").open("rb") as po_file:
        return read_po(po_file, locale=language)


def forms(message: Message) -> list[str]:
    return list(message.string) if isinstance(message.string, tuple | list) else [message.string]


def key(message: Message) -> str:
    return message.id if isinstance(message.id, str) else message.id[0]


def placeholders(text: str) -> list[str]:
    return sorted(re.findall(r"\{[a-z_]+\}", text))


def tags(text: str) -> list[str]:
    return sorted(re.findall(r"</?[a-z-]+", text))


ENGLISH = {key(m): m for m in catalog(DEFAULT_LANGUAGE) if m.id}


def test_the_four_languages_have_catalogs() -> None:
    assert languages() >= {"en", "es", "ru", "vi"}


@pytest.mark.parametrize("language", OTHERS)
def test_every_key_is_translated_with_the_same_placeholders_and_markup(language: str) -> None:
    theirs = {key(m): m for m in catalog(language) if m.id}
    assert sorted(set(ENGLISH) - set(theirs)) == [], "keys missing"
    assert sorted(set(theirs) - set(ENGLISH)) == [], "keys English does not have"
    wrong = []
    for name, english in ENGLISH.items():
        source = forms(english)[0]
        for text in forms(theirs[name]):
            if not text.strip() or placeholders(text) != placeholders(source) or tags(text) != tags(source):
                wrong.append(name)
    assert wrong == []


@pytest.mark.parametrize("language", [DEFAULT_LANGUAGE, *OTHERS])
def test_plural_entries_have_every_form_of_the_language(language: str) -> None:
    messages = catalog(language)
    plural = [m for m in messages if m.id and m.pluralizable]
    assert plural, "the count.* entries are plural"
    assert all(len(forms(m)) == messages.num_plurals and all(forms(m)) for m in plural)
    assert {key(m) for m in plural} == {name for name, m in ENGLISH.items() if m.pluralizable}


@pytest.mark.parametrize("language", [DEFAULT_LANGUAGE, *OTHERS])
def test_labels_commands_and_descriptions_fit_telegrams_limits(language: str) -> None:
    for name in ENGLISH:
        shown = template(name, language).replace("{service}", SERVICE)
        if LABELS.search(name):
            assert len(shown) <= LABEL_LIMIT, (name, shown)
        if name.startswith("commands."):
            assert 3 <= len(shown) <= COMMAND_LIMIT, (name, shown)
    assert len(translate("bot.short_description", language, service=SERVICE)) <= 120
    assert len(translate("bot.description", language, service=SERVICE)) <= 512


def test_every_english_key_is_used_by_the_code() -> None:
    source = "".join(path.read_text() for folder in ("flows", "bot") for path in (ROOT / folder).rglob("*.py"))
    built = set(re.findall(r'f"([a-z_]+\.[a-z_]*)\{', source))  # f"desk.state_{status}" and the like
    unused = [name for name in ENGLISH if f'"{name}"' not in source and not name.startswith(tuple(built))
              and f'"{name.rsplit("_", 1)[0]}"' not in source]  # "limits.paused_email" + _subject / _body
    assert unused == []


@pytest.mark.parametrize("language", OTHERS)
def test_plural_forms_read_right_for_small_and_large_counts(language: str) -> None:
    from flows.texts import count
    shown = {n: translate(count("tries", n), language) for n in (1, 2, 5, 21)}
    assert all(str(n) in text for n, text in shown.items())
    if language == "ru":
        assert (shown[1], shown[2], shown[5], shown[21]) == ("1 попытка", "2 попытки", "5 попыток", "21 попытка")
