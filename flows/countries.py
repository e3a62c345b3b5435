"""Countries by ISO 3166-1 alpha-2 code, with their names in the user's language from Babel's CLDR data, and a
forgiving search (in that language or in English)."""

from __future__ import annotations

from functools import cache

from babel import Locale

NOT_COUNTRIES = {"EU", "EZ", "UN", "QO", "ZZ"}
COMMON = ("US", "GB", "DE", "FR", "IN", "BR", "NG", "TR")


@cache
def countries(language: str | None = "en") -> dict[str, str]:
    """Code → name in `language` (English where CLDR has no such locale), for every country and territory."""
    try:
        names = Locale.parse((language or "en").replace("-", "_")).territories
    except (ValueError, LookupError):
        names = Locale("en").territories
    return {code: name for code, name in names.items() if len(code) == 2 and code.isalpha()
            and code not in NOT_COUNTRIES}


def name_of(code: str, language: str | None = "en") -> str:
    return countries(language).get(code.upper(), code.upper())


def search(query: str, language: str | None = "en") -> list[str]:
    """Codes matching a typed name (in `language` or in English) or code: an exact match alone, else names that
    start with or contain it."""
    wanted = " ".join(query.split()).casefold()
    if not wanted:
        return []
    tables = (countries(language), countries("en"))
    names = [(code, name.casefold()) for table in tables for code, name in table.items()]
    exact = [code for code, name in names if name == wanted or code.casefold() == wanted]
    if exact:
        return exact[:1]
    starts = list(dict.fromkeys(code for code, name in names if name.startswith(wanted)))
    return starts or list(dict.fromkeys(code for code, name in names if wanted in name))
