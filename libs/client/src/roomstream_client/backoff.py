"""Reconnect delays: exponential backoff with jitter (pure logic).

Jitter spreads the reconnects of many clients that lost the same gateway at the same moment, so
they do not all land on the survivors in one burst.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass(slots=True)
class Backoff:
    """Delays `base·factor^n` capped at `cap`, each scaled by a random factor in [1-jitter, 1]."""

    base: float = 0.05
    cap: float = 5.0
    factor: float = 2.0
    jitter: float = 0.5
    rng: random.Random = field(default_factory=random.Random)
    attempt: int = 0

    def next_delay(self) -> float:
        """The delay before the next attempt; each call counts one more failed attempt."""
        delay = min(self.cap, self.base * self.factor**self.attempt)
        self.attempt += 1
        return delay * (1.0 - self.jitter * self.rng.random())

    def reset(self) -> None:
        """A connection succeeded: the next failure starts from `base` again."""
        self.attempt = 0
