"""The names a symbol's trading calendar may have: ours (``auto``, ``24/7``, ``fx``,
``weekdays``) and every ``exchange_calendars`` code, checked where the config is loaded.

It sits below both ``config`` (which validates ``data.calendar``) and ``data.calendars``
(which puts bars in trading order), so neither imports the other."""

from __future__ import annotations

import difflib
import functools
from typing import Any

from monolith.errors import ConfigError

AUTO = "auto"
ALWAYS_OPEN = "24/7"
FX = "fx"
WEEKDAYS = "weekdays"
SPECIAL_CALENDARS = (AUTO, ALWAYS_OPEN, FX, WEEKDAYS)


def check_calendar(where: str, code: Any, *, allow_auto: bool = True) -> None:
    """Refuse a calendar name that is none of ours and no exchange calendar."""
    allowed = SPECIAL_CALENDARS if allow_auto else SPECIAL_CALENDARS[1:]
    if isinstance(code, str) and (code in allowed or code in exchange_names()):
        return
    names = [*allowed, *exchange_names()]
    close = difflib.get_close_matches(str(code).upper(), names, n=3, cutoff=0.5)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    raise ConfigError(
        f"{where} = {code!r} is not a calendar{hint}: use one of {list(allowed)} or an "
        f"exchange code such as XNYS, XLON, XEUR, CMES ({len(exchange_names())} known; "
        "python -c 'import exchange_calendars as x; print(x.get_calendar_names())')"
    )


@functools.cache
def exchange_names() -> frozenset[str]:
    """Every exchange calendar name and alias (less exchange_calendars' own 24/7 ones)."""
    import exchange_calendars

    names = exchange_calendars.get_calendar_names(include_aliases=True)
    return frozenset(n for n in names if n not in (ALWAYS_OPEN, "24/5"))
