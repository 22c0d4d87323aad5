"""Checks of hyper-parameters, shared by the training configurations: each raises a ValueError (a
TypeError for a value of the wrong type) naming the attribute and what it must be."""
from __future__ import annotations

import math
import numbers

MAX_SEED = 2**32 - 1  # seeds feed torch generators as (seed * 1_000_003 + epoch): kept well inside 64 bits
MAX_EPOCHS = 1_000_000  # more is a typo, not a plan: it would train for ever
MAX_COUNT = 2**31 - 1  # steps, batch sizes: torch takes them as 64-bit integers, and nothing sensible is larger


def check_int(name: str, value: object, low: int = 1, high: int | None = None, *, none: bool = False) -> None:
    """``value`` is an integer in [low, high] (or None when ``none``)."""
    if value is None and none:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer{' or None' if none else ''}, got {value!r}")
    if value < low or (high is not None and value > high):
        kind = {0: "a non-negative integer", 1: "a positive integer"}.get(low, f"an integer >= {low}")
        bound = f" (at most {high})" if high is not None and high < MAX_COUNT else ""  # MAX_COUNT goes unsaid
        raise ValueError(f"{name} must be {kind}{bound}{' or None' if none else ''}, got {value}")


def check_float(name: str, value: object, low: float, high: float = math.inf, *, low_open: bool = False,
                high_open: bool = False, none: bool = False) -> None:
    """``value`` is a finite number in the interval from low to high (open ends as asked), or None
    when ``none``."""
    if value is None and none:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number{' or None' if none else ''}, got {value!r}")
    inside = (value > low if low_open else value >= low) and (value < high if high_open else value <= high)
    if not math.isfinite(value) or not inside:
        if low == 0 and low_open and high == math.inf:
            kind = "positive and finite"
        else:
            kind = f"a finite number in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        raise ValueError(f"{name} must be {kind}{' or None' if none else ''}, got {value}")


def check_bool(name: str, value: object) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r}")


def check_betas(betas: object) -> tuple[float, float]:
    """Adam's ``betas``: a pair of numbers, each in [0, 1); returned as a tuple."""
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise TypeError(f"betas must be a pair of numbers in [0, 1), got {betas!r}")
    for k, beta in enumerate(betas):
        check_float(f"betas[{k}]", beta, 0.0, 1.0, high_open=True)
    return tuple(betas)
