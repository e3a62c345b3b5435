"""Countries by ISO 3166-1 alpha-2 code, with English names from Babel's CLDR data, and a forgiving search."""

from __future__ import annotations

from functools import cache

from babel import Locale

NOT_COUNTRIES = {"EU", "EZ", "UN", "QO", "ZZ"}
COMMON = ("US", "GB", "DE", "FR", "IN", "BR", "NG", "TR")


@cache
def countries() -> dict[str, str]:
    """Code → English name, for every country and territory."""
    names = Locale("en").territories
    return {code: name for code, name in names.items() if len(code) == 2 and code.isalpha()
            and code not in NOT_COUNTRIES}


def name_of(code: str) -> str:
    return countries().get(code.upper(), code.upper())


def search(query: str) -> list[str]:
    """Codes matching a typed name or code: an exact match alone, else names that start with or contain it."""
    wanted = " ".join(query.split()).casefold()
    if not wanted:
        return []
    table = countries()
    exact = [code for code, name in table.items() if name.casefold() == wanted or code.casefold() == wanted]
    if exact:
        return exact[:1]
    starts = [code for code, name in table.items() if name.casefold().startswith(wanted)]
    return starts or [code for code, name in table.items() if wanted in name.casefold()]
