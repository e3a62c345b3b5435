"""How long to wait before trying a call to another system again: doubling, with jitter."""

from __future__ import annotations

import random
from collections.abc import Callable

FIRST_DELAY = 2.0
MAX_DELAY = 600.0


def retry_delay(attempts: int, rng: Callable[[], float] = random.random) -> float:
    """Seconds before the next try after `attempts` failed ones: doubling from FIRST_DELAY up to MAX_DELAY, each
    between half and all of it, so changes held up together do not all try again at one moment."""
    ceiling: float = min(MAX_DELAY, FIRST_DELAY * 2.0 ** min(attempts, 20))
    return ceiling * (0.5 + rng() / 2)
