"""Every user-facing word goes through here: gettext catalogs (read with Babel), one function to translate.

Catalog entries are keyed by a stable id ("start.greeting") and may contain Telegram's small HTML subset (<b>, <i>,
<code>). Parameters are HTML-escaped when they are filled in, so a user's own words can never inject markup.
"""

from __future__ import annotations

import gettext
import html
import io
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Protocol, runtime_checkable

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po

LOCALES = Path(__file__).parent / "locales"
DOMAIN = "messages"
DEFAULT_LANGUAGE = "en"


@dataclass(frozen=True)
class Text:
    """A message not yet translated: a catalog key and the values for its placeholders."""

    key: str
    params: Mapping[str, object] = field(default_factory=dict)
    sensitive: bool = False


@runtime_checkable
class InLanguage(Protocol):
    """A placeholder value written in the reader's language when its text is rendered (a duration, say)."""

    def in_language(self, language: str | None) -> str: ...


class Html(str):
    """A placeholder value that is HTML already, inserted as it is: made by Telegram's framework from a message's
    own entities, so escaped and well formed. Anything else filled in is escaped."""


def text(key: str, **params: object) -> Text:
    """Shorthand for `Text(key, params)`."""
    return Text(key, params)


def count(unit: str, n: int) -> Text:
    """`n` of a unit in words, in the plural form the language wants ("1 try", "3 tries"; Russian has three):
    the catalog's plural entry `count.{unit}`."""
    return Text(f"count.{unit}", {"n": n})


@cache
def _catalog(language: str) -> gettext.NullTranslations:
    po_path = LOCALES / language / "LC_MESSAGES" / f"{DOMAIN}.po"
    if not po_path.exists():
        return gettext.NullTranslations()
    with po_path.open("rb") as po_file:
        catalog = read_po(po_file, locale=language)
    buffer = io.BytesIO()
    write_mo(buffer, catalog)
    buffer.seek(0)
    translations = gettext.GNUTranslations(buffer)
    if language != DEFAULT_LANGUAGE:
        translations.add_fallback(_catalog(DEFAULT_LANGUAGE))
    return translations


@cache
def languages() -> frozenset[str]:
    """The languages that have a catalog, found on disk once."""
    return frozenset(path.name for path in LOCALES.iterdir() if (path / "LC_MESSAGES" / f"{DOMAIN}.po").is_file())


def load_catalogs() -> None:
    """Read and compile every catalog now (at start-up), so that no event waits for the disk."""
    for language in languages():
        _catalog(language)


def known_keys(language: str = DEFAULT_LANGUAGE) -> set[str]:
    """Every key the catalog of `language` defines."""
    with (LOCALES / language / "LC_MESSAGES" / f"{DOMAIN}.po").open("rb") as po_file:
        return {_key(message.id) for message in read_po(po_file) if message.id}


def _key(message_id: str | tuple[str, ...] | list[str]) -> str:
    """A catalog entry's key (a plural entry's id is its singular and plural ids, both the key)."""
    return message_id if isinstance(message_id, str) else message_id[0]


def _language_for(language: str | None) -> str:
    if not language:
        return DEFAULT_LANGUAGE
    base = language.split("-")[0].split("_")[0].lower()
    return base if base in languages() else DEFAULT_LANGUAGE


def translate(message: Text | str, language: str | None = None, **defaults: object) -> str:
    """Render a text in the user's language; `defaults` fill placeholders the text itself leaves open."""
    if isinstance(message, str):
        message = Text(message)
    catalog = _catalog(_language_for(language))
    n = message.params.get("n")
    if isinstance(n, int) and not isinstance(n, bool):
        template = catalog.ngettext(message.key, message.key, n)
    else:
        template = catalog.gettext(message.key)
    values = {name: _fill(value, language, defaults) for name, value in {**defaults, **message.params}.items()}
    return template.format_map(values) if values or "{" in template else template


def plain_text(rendered: str) -> str:
    """A rendered text without its HTML: for email, SMS, button labels and the console."""
    return html.unescape(re.sub(r"<[^>]+>", "", rendered))


def template(key: str, language: str = DEFAULT_LANGUAGE) -> str:
    """The raw catalog text of `key`, placeholders unfilled (for tools such as the flow diagrams)."""
    return _catalog(_language_for(language)).gettext(key)


def _fill(value: object, language: str | None, defaults: dict[str, object]) -> str:
    """A placeholder's value: nested Texts (one, or a tuple of lines) are translated, anything else escaped."""
    if isinstance(value, Text):
        return translate(value, language, **defaults)
    if isinstance(value, tuple) and all(isinstance(item, Text) for item in value):
        return "\n".join(translate(item, language, **defaults) for item in value)
    if isinstance(value, Html):
        return str(value)
    if isinstance(value, InLanguage):
        return html.escape(value.in_language(language), quote=False)
    return html.escape(str(value), quote=False)
