"""Estimates such as `2 weeks`, `3-5 days` or `~1 month`, converted to working days."""

from __future__ import annotations

import re
from collections.abc import Mapping

from planner.model import Estimate

_ESTIMATE = re.compile(
    r"""^\s*(?P<approx>~|about\s+|approx\.?\s+)?\s*
        (?P<low>\d+(?:\.\d+)?)
        (?:\s*(?:-|–|—|to)\s*(?P<high>\d+(?:\.\d+)?))?
        \s*(?P<unit>[A-Za-z]+)\s*$""",
    re.VERBOSE,
)

# No plan is this long; the cap keeps a slip of the keyboard (`1000000 months`) from scheduling past the year
# 9999, which calendar dates cannot reach.
MAX_WORKING_DAYS = 5000


def parse_estimate(text: str, units: Mapping[str, float]) -> Estimate:
    """Read `N unit(s)`, a range `N-M unit(s)`, optionally prefixed with `~`, into working days.

    `units` maps a singular unit name to its working days (the `[tool.planner] units` table).
    Raises ValueError whose message says what was expected.
    """
    names = " | ".join(f"{name}(s)" for name in units)
    expected = f"expected 'N {names}', a range like '3-5 days', optionally prefixed with '~'"
    match = _ESTIMATE.match(text)
    if not match:
        raise ValueError(f"cannot read estimate {text!r}: {expected}")
    unit = _unit(match["unit"], units)
    if unit is None:
        raise ValueError(f"unknown unit {match['unit']!r} in estimate {text!r}: use one of {names}")
    low = float(match["low"])
    high = float(match["high"]) if match["high"] else low
    if low <= 0 or high <= 0:
        raise ValueError(f"estimate {text!r} must be more than zero")
    if high < low:
        raise ValueError(f"estimate {text!r} has its range backwards: write the smaller number first")
    per_unit = units[unit]
    if high * per_unit > MAX_WORKING_DAYS:
        raise ValueError(
            f"estimate {text!r} is more than {MAX_WORKING_DAYS} working days (about 20 years):"
            " split the work into smaller plans"
        )
    return Estimate(
        text=text.strip(),
        low_days=low * per_unit,
        high_days=high * per_unit,
        approximate=bool(match["approx"]),
    )


def _unit(word: str, units: Mapping[str, float]) -> str | None:
    word = word.lower()
    for name in units:
        lowered = name.lower()
        if word in (lowered, lowered + "s") or (lowered.endswith("s") and word == lowered[:-1]):
            return name
    return None


def format_days(days: float) -> str:
    """`5`, `2.5`: working days without a needless `.0`."""
    return f"{days:g}"
