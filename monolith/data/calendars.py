"""Trading calendars: when each symbol's market trades, so that a gap is a bar missing while
the market is open, and the bars on either side of a closure are consecutive.

A symbol's calendar is one of:

- ``24/7``: every moment is trading time (crypto); any missing bar is a gap.
- an exchange calendar by its ISO MIC (``XNYS``, ``XLON``, ``XEUR``, ``CMES``, ...), taken from
  ``exchange_calendars`` with its holidays, early closes and lunch breaks;
- ``fx``: Sunday 17:00 to Friday 17:00 New York time, one session per New York close;
- ``weekdays``: Monday to Friday, with runs of at most two missing weekdays taken as holidays
  (Easter's Friday and Monday, Christmas and Boxing Day); intraday, the trading hours are the
  time-of-day slots the bars fill on at least 90% of the sessions (learned in UTC).

``auto`` (the default) decides per symbol from its bars: bars on most Saturdays mean ``24/7``;
otherwise the exchange calendar whose sessions (and, intraday, hours) match the bars best, when
the match is close; else ``fx`` for intraday bars that trade from Sunday evening; else
``weekdays``. What was chosen, the match and why go into the prepared metadata.

Trading time is counted in bar-sized slots: intraday, the slots of a bar's length that overlap
the sessions, aligned to midnight in the exchange's own zone (so DST moves nothing); daily,
weekly and monthly bars, the sessions, weeks or months that hold a session. A slot the bars
leave empty on at least 90% of the sessions of an exchange or ``fx`` calendar is a break the
calendar does not list (a futures maintenance hour): it is learned, recorded and not counted
as missing. Between two consecutive bars, the open slots strictly between them are the missing
bars; closures have none. Times stay UTC everywhere else.
"""

from __future__ import annotations

import functools
import logging
import warnings
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from monolith.calendar_names import ALWAYS_OPEN, AUTO, FX, WEEKDAYS
from monolith.errors import DataError

log = logging.getLogger(__name__)

# Exchanges ``auto`` tries, in order of preference on a tie (XNYS before XNAS-like twins).
AUTO_EXCHANGES = (
    "XNYS",
    "XTSE",
    "XLON",
    "XETR",
    "XEUR",
    "XPAR",
    "XAMS",
    "XSWX",
    "XMIL",
    "XMAD",
    "XSTO",
    "XASX",
    "XTKS",
    "XHKG",
    "XSHG",
    "XKRX",
    "XBOM",
    "XSES",
    "XJSE",
    "BVMF",
)
AUTO_FUTURES = ("CMES",)
# How close a match must be for ``auto`` to take an exchange calendar.
MATCH = 0.9  # the skipped weekdays' agreement with the calendar's holidays
SESSIONS_MATCH = 0.97  # the share of bars in sessions, and of sessions with bars
# A match this close ends the search (each calendar costs ~0.1-0.5 s to build): candidates are
# tried in order, so twins with the same sessions (XPAR, XAMS) resolve to the first.
CERTAIN_MATCH = 0.995
# A slot is a learned break when bars fill it on at most this share of sessions; a
# ``weekdays`` slot is trading time when they fill it on at least WEEKDAY_HOURS of them.
BREAK_SHARE = 0.10
WEEKDAY_HOURS = 0.90
MIN_SESSIONS_TO_LEARN = 5
HOLIDAY_RUN = 2  # weekdays: a run of at most this many missing weekdays is a holiday

NS = 1_000_000_000
DAY = 86_400 * NS
_EPOCH_MONDAY = 4  # 1970-01-05, day 4 since the epoch, is a Monday


@dataclass
class SymbolCalendar:
    """The calendar one symbol's bars were put in trading order by, and what it found."""

    calendar: str
    chosen_by: str  # "auto", "data.calendar" or "data.calendars"
    bar: str  # "1h", "1d", "1w", ...
    interval_ns: int
    timezone: str
    match: float | None = None
    why: str = ""
    learned_breaks: list[str] = field(default_factory=list)
    # Intraday: the bar-sized slots of the day (0 = from midnight in ``timezone``) taken out of
    # trading time (learned breaks; a weekdays calendar's closed hours), reused by the encoder.
    closed_slots: list[int] = field(default_factory=list)
    gaps: int = 0  # consecutive bars with a missing bar between them while open
    missing_bars: int = 0
    closures: int = 0  # consecutive bars on either side of a closure (not gaps)
    bars_outside_sessions: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------------------------
# Bars in trading order


def trading_segments(
    frame: pd.DataFrame,
    gap_tolerance_bars: int,
    blocks: list[tuple[str, int, int]],
    calendar_of: Callable[[str], tuple[str, str]],
    recorded: Mapping[str, Mapping[str, Any]] | None = None,
) -> tuple[np.ndarray, dict[str, SymbolCalendar]]:
    """Per symbol (``blocks`` of a frame sorted by symbol and time), a new segment starts
    after more than ``gap_tolerance_bars`` bars missing while its market is open.

    ``calendar_of(symbol)`` gives (calendar or ``auto``, the setting that chose it);
    ``recorded`` (a bundle's per-symbol calendars) fixes the bar length and learned breaks
    to those found at training, so new bars are cut exactly as the training bars were.
    """
    ts = pd.DatetimeIndex(frame["timestamp"]).as_unit("ns").asi8
    segment = np.zeros(len(frame), dtype=np.int64)
    found = {}
    for symbol, start, end in blocks:
        code, chosen_by = calendar_of(symbol)
        before = (recorded or {}).get(symbol)
        info, missing = trading_gaps(
            ts[start:end],
            code,
            chosen_by,
            interval=None if before is None else before["interval_ns"],
            closed_slots=None if before is None else before.get("closed_slots", []),
        )
        segment[start + 1 : end] = np.cumsum(missing > gap_tolerance_bars)
        found[symbol] = info
    return segment, found


def trading_gaps(
    ts: np.ndarray,
    calendar: str,
    chosen_by: str,
    interval: float | None = None,
    closed_slots: list[int] | None = None,
) -> tuple[SymbolCalendar, np.ndarray]:
    """The calendar of one symbol's bars (``ts``: sorted UTC nanoseconds) and, between each
    pair of consecutive bars, how many bars are missing while the market is open.

    ``calendar`` is a calendar name or ``auto``; ``interval`` the bar length in ns (default:
    the median spacing of the bars); ``closed_slots`` the intraday slots out of trading time
    (default: learned from the bars).
    """
    ts = np.asarray(ts, dtype=np.int64)
    diffs = np.diff(ts)
    if interval is None:
        interval = float(np.median(diffs)) if len(diffs) else float(DAY)
    median = interval
    interval = max(int(round(interval)), 1)
    bar = _bar_label(interval)
    if calendar == AUTO:
        calendar, match, why = _detect(ts, interval)
        chosen_by = AUTO
    else:
        match, why = None, f"set by {chosen_by}"
    if calendar == ALWAYS_OPEN or len(ts) < 2:
        missing = _always_open_missing(diffs, median)
        info = SymbolCalendar(calendar, chosen_by, bar, interval, "UTC", match, why)
    else:
        clock = _clock(ts, interval, calendar, closed_slots)
        missing = clock.missing(ts)
        info = SymbolCalendar(
            calendar,
            chosen_by,
            bar,
            interval,
            clock.timezone,
            match,
            why,
            clock.learned,
            clock.closed_slots,
        )
        info.bars_outside_sessions = clock.outside(ts)
    info.gaps = int(np.count_nonzero(missing))
    info.missing_bars = int(missing.sum())
    info.closures = int(np.count_nonzero((missing == 0) & (diffs > 1.5 * interval)))
    return info, missing


def _always_open_missing(diffs: np.ndarray, interval: float) -> np.ndarray:
    """Missing bars of a market that never closes: the spacing in bars, less one."""
    return np.maximum(np.ceil(diffs / interval - 1 - 1e-9), 0).astype(np.int64)


def _bar_label(interval: int) -> str:
    for unit, size in (("w", 7 * DAY), ("d", DAY), ("h", 3600 * NS), ("min", 60 * NS)):
        if interval >= size and interval % size == 0:
            return f"{interval // size}{unit}"
    return f"{interval / NS:g}s"


def _kind(interval: int) -> str:
    if interval < 20 * 3600 * NS:
        return "intraday"
    if interval < 5 * DAY:
        return "daily"
    return "weekly" if interval < 25 * DAY else "monthly"


# --------------------------------------------------------------------------------------------
# Clocks: the open slots of a calendar over a symbol's span


@dataclass
class _Clock:
    """The sorted starts (UTC ns) of a calendar's open slots, and how to key a bar to its
    slot."""

    keys: np.ndarray
    timezone: str
    key_of: Any  # bars (UTC ns) -> slot keys
    learned: list[str] = field(default_factory=list)
    closed_slots: list[int] = field(default_factory=list)

    def missing(self, ts: np.ndarray) -> np.ndarray:
        bar_keys = self.key_of(ts)
        pos = np.searchsorted(self.keys, bar_keys, side="left")
        inside = self._inside(bar_keys, pos)
        gap = pos[1:] - pos[:-1] - inside[:-1].astype(np.int64)
        return np.maximum(gap, 0).astype(np.int64)

    def outside(self, ts: np.ndarray) -> int:
        """Bars in no open slot (extended hours, a session the calendar does not list)."""
        bar_keys = self.key_of(ts)
        return int(np.count_nonzero(~self._inside(bar_keys, np.searchsorted(self.keys, bar_keys))))

    def _inside(self, bar_keys: np.ndarray, pos: np.ndarray) -> np.ndarray:
        if len(self.keys) == 0:
            return np.zeros(len(bar_keys), dtype=bool)
        return self.keys[np.minimum(pos, len(self.keys) - 1)] == bar_keys


def _clock(
    ts: np.ndarray, interval: int, calendar: str, closed: list[int] | None = None, learn=True
) -> _Clock:
    kind = _kind(interval)
    if kind == "intraday":
        return _intraday_clock(ts, interval, calendar, closed if learn else [])
    return _period_clock(ts, kind, calendar)


def _local_days(ts: np.ndarray, timezone: str) -> np.ndarray:
    """Each bar's date (days since the epoch): a bar stamped at UTC midnight is a date as
    published; any other time is dated in the market's own zone."""
    if timezone == "UTC" or np.all(ts % DAY == 0):
        return ts // DAY
    return _wall(ts, timezone) // DAY


def _wall(ts: np.ndarray, timezone: str) -> np.ndarray:
    """UTC ns -> the local wall clock's ns (as if it were UTC)."""
    if timezone == "UTC":
        return ts
    local = pd.DatetimeIndex(ts.astype("datetime64[ns]"), tz="UTC").tz_convert(timezone)
    return local.tz_localize(None).as_unit("ns").asi8


def _period(days: np.ndarray, kind: str) -> np.ndarray:
    if kind == "daily":
        return days
    if kind == "weekly":
        return (days - _EPOCH_MONDAY) // 7
    months = days.astype("datetime64[D]").astype("datetime64[M]")
    return months.astype(np.int64)


def _period_clock(ts: np.ndarray, kind: str, calendar: str) -> _Clock:
    timezone = _timezone(calendar, ts)
    days = _local_days(ts, timezone)
    sessions = _session_days(days, calendar)
    keys = np.unique(_period(sessions, kind))
    return _Clock(keys, timezone, lambda t: _period(_local_days(t, timezone), kind))


def _session_days(days: np.ndarray, calendar: str) -> np.ndarray:
    """Session dates (days since the epoch) over the bars' span."""
    first, last = int(days.min()), int(days.max())
    if calendar in (FX, WEEKDAYS):
        span = np.arange(first, last + 1)
        weekdays = span[(span - _EPOCH_MONDAY) % 7 < 5]
        return weekdays if calendar == FX else _without_holidays(weekdays, np.unique(days))
    cal = _exchange(calendar, first, last)
    sessions = cal.sessions.as_unit("ns").asi8 // DAY
    return sessions[(sessions >= first) & (sessions <= last)]


def _without_holidays(weekdays: np.ndarray, traded: np.ndarray) -> np.ndarray:
    """Weekdays less the runs of at most HOLIDAY_RUN untraded weekdays between traded ones."""
    has = np.isin(weekdays, traded)
    keep = has.copy()
    run_start = None
    for i, present in enumerate(np.r_[has, True]):
        if not present and run_start is None:
            run_start = i
        elif present and run_start is not None:
            inner = run_start > 0 and i < len(has)
            if not inner or i - run_start > HOLIDAY_RUN:
                keep[run_start:i] = True
            run_start = None
    return weekdays[keep]


def _timezone(calendar: str, ts: np.ndarray) -> str:
    if calendar == FX:
        return "America/New_York"
    if calendar in (WEEKDAYS, ALWAYS_OPEN):
        return "UTC"
    return str(_exchange(calendar, int(ts.min() // DAY) - 1, int(ts.max() // DAY) + 1).tz)


def _sessions_utc(days: np.ndarray, calendar: str, ts: np.ndarray) -> pd.DataFrame:
    """Open, close and break of each session over the bars' span (UTC ns)."""
    first, last = int(days.min()) - 1, int(days.max()) + 1
    if calendar == FX:
        span = np.arange(first, last + 1)
        dates = span[(span - _EPOCH_MONDAY) % 7 < 5].astype("datetime64[D]")
        close = pd.DatetimeIndex(dates) + pd.Timedelta(hours=17)
        close = close.tz_localize("America/New_York").tz_convert("UTC")
        opens = (pd.DatetimeIndex(dates) - pd.Timedelta(hours=7)).tz_localize("America/New_York")
        return pd.DataFrame(
            {
                "open": opens.tz_convert("UTC").as_unit("ns").asi8,
                "close": close.as_unit("ns").asi8,
                "label": dates.astype(np.int64),
            }
        )
    if calendar == WEEKDAYS:
        span = np.arange(first, last + 1)
        weekdays = span[(span - _EPOCH_MONDAY) % 7 < 5]
        sessions = _without_holidays(weekdays, np.unique(ts // DAY))
        return pd.DataFrame(
            {"open": sessions * DAY, "close": (sessions + 1) * DAY, "label": sessions}
        )
    cal = _exchange(calendar, first, last)
    schedule = cal.schedule
    day = schedule.index.as_unit("ns").asi8 // DAY
    schedule = schedule[(day >= first) & (day <= last)]
    out = pd.DataFrame({c: _utc_ns(schedule[c]) for c in ("open", "close")})
    for c in ("break_start", "break_end"):
        out[c] = _utc_ns(schedule[c])
    out["label"] = schedule.index.as_unit("ns").asi8 // DAY
    return out


def _utc_ns(column: pd.Series) -> np.ndarray:
    values = pd.DatetimeIndex(column.array).tz_convert("UTC").tz_localize(None)
    return values.as_unit("ns").asi8


def _intraday_clock(
    ts: np.ndarray, interval: int, calendar: str, closed: list[int] | None
) -> _Clock:
    timezone = _timezone(calendar, ts)
    sessions = _sessions_utc(_local_days(ts, timezone), calendar, ts)

    def key_of(t: np.ndarray) -> np.ndarray:
        return t - (_wall(t, timezone) % interval)

    starts, _ = _slots(sessions, interval, timezone)
    if DAY % interval or closed == []:
        return _Clock(np.unique(starts), timezone, key_of)
    slot_of_day = (_wall(starts, timezone) % DAY) // interval
    expected = np.bincount(slot_of_day, minlength=DAY // interval)
    if closed is None:  # learn them from the bars
        filled = np.isin(starts, key_of(ts))
        seen = np.bincount(slot_of_day, weights=filled, minlength=DAY // interval)
        if calendar == WEEKDAYS:
            keep_slot = seen >= WEEKDAY_HOURS * np.maximum(expected, 1)
        else:
            keep_slot = (expected < MIN_SESSIONS_TO_LEARN) | (seen > BREAK_SHARE * expected)
    else:
        keep_slot = np.ones(DAY // interval, dtype=bool)
        keep_slot[[c for c in closed if 0 <= c < len(keep_slot)]] = False
    keys = np.unique(starts[keep_slot[slot_of_day]])
    clock = _Clock(keys, timezone, key_of)
    clock.learned = _describe_slots(keep_slot, expected, interval, timezone)
    clock.closed_slots = [int(i) for i in np.flatnonzero(~keep_slot & (expected > 0))]
    return clock


def _slots(sessions: pd.DataFrame, interval: int, timezone: str) -> tuple[np.ndarray, np.ndarray]:
    """The bar-sized slots (their UTC starts) that overlap each session, less those wholly in
    its break; and the session each belongs to."""
    opens = sessions["open"].to_numpy(np.int64)
    closes = sessions["close"].to_numpy(np.int64)
    first = opens - (_wall(opens, timezone) % interval)
    counts = np.maximum(-(-(closes - first) // interval), 0)
    session = np.repeat(np.arange(len(opens)), counts)
    offset = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    starts = first[session] + offset * interval
    if "break_start" in sessions:
        bs = sessions["break_start"].to_numpy(np.int64)[session]
        be = sessions["break_end"].to_numpy(np.int64)[session]
        valid = (bs > 0) & (be > 0)  # NaT reads as the minimum int64
        in_break = valid & (starts >= bs) & (starts + interval <= be)
        starts, session = starts[~in_break], session[~in_break]
    return starts, session


def _describe_slots(
    keep: np.ndarray, expected: np.ndarray, interval: int, timezone: str
) -> list[str]:
    """Runs of slots taken out of trading time, as wall-clock ranges in the market's zone."""
    out = []
    dropped = (~keep) & (expected > 0)
    i = 0
    while i < len(dropped):
        if not dropped[i]:
            i += 1
            continue
        j = i
        while j < len(dropped) and dropped[j]:
            j += 1
        out.append(f"{_hhmm(i * interval)}-{_hhmm(j * interval)} {timezone}")
        i = j
    return out


def _hhmm(ns: int) -> str:
    minutes = ns // (60 * NS)
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


@functools.lru_cache(maxsize=64)
def _exchange_cached(code: str, first_year: int, last_year: int) -> Any:
    import exchange_calendars

    with warnings.catch_warnings():
        # exchange_calendars 4.x reads tz-aware Series.values, which pandas 3.1 deprecates.
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        return exchange_calendars.get_calendar(
            code, start=f"{first_year}-01-01", end=f"{last_year}-12-31"
        )


def _exchange(code: str, first_day: int, last_day: int) -> Any:
    """The exchange calendar over whole years around the days (cached per process)."""
    first = int(np.datetime64(first_day, "D").astype("datetime64[Y]").astype(int)) + 1970
    last = int(np.datetime64(last_day, "D").astype("datetime64[Y]").astype(int)) + 1970
    try:
        return _exchange_cached(code, first, last)
    except ValueError as exc:
        raise DataError(
            f"calendar {code} cannot cover {first}-{last}: {str(exc).splitlines()[0]}; set "
            "data.calendars for this symbol to another calendar (e.g. weekdays)"
        ) from exc


# --------------------------------------------------------------------------------------------
# auto


def _detect(ts: np.ndarray, interval: int) -> tuple[str, float | None, str]:
    """(calendar, match, why) for one symbol's bars."""
    days = np.unique(ts // DAY)
    span = int(days[-1] - days[0]) + 1 if len(days) else 0
    if span < 14:
        return ALWAYS_OPEN, None, f"{span} day(s) of bars: too short to tell closures from gaps"
    weekday = (days - _EPOCH_MONDAY) % 7
    saturdays = span // 7
    saturday_share = np.count_nonzero(weekday == 5) / max(saturdays, 1)
    if saturday_share >= 0.5:
        return ALWAYS_OPEN, None, f"bars on {min(saturday_share, 1):.0%} of Saturdays"
    kind = _kind(interval)
    if kind in ("weekly", "monthly"):
        return WEEKDAYS, None, f"{kind} bars: every {kind[:-2]} with a weekday holds a bar"
    sunday_share = np.count_nonzero(weekday == 6) / max(saturdays, 1)
    if kind == "intraday" and sunday_share >= 0.5:
        # Futures before fx: fx hours (from 17:00 New York) contain the futures' (from 17:00
        # Chicago), so futures bars match both; fx bars fall outside a futures calendar.
        candidates = (*AUTO_FUTURES, FX)
    elif kind == "intraday":
        candidates = AUTO_EXCHANGES + AUTO_FUTURES
    else:
        candidates = AUTO_EXCHANGES
    scores: dict[str, float] = {}
    for code in candidates:
        try:
            scores[code] = _match(ts, interval, code)
        except DataError:
            continue  # the exchange's calendar does not reach back this far
        if scores[code] >= CERTAIN_MATCH:
            break
    threshold = MATCH
    best = max(scores, key=lambda c: scores[c], default=None)  # first of equals wins
    ranked = sorted(scores.items(), key=lambda kv: -kv[1])[:3]
    runners = ", ".join(f"{c} {s:.3f}" for c, s in ranked)
    if best is not None and scores[best] >= threshold:
        return best, round(scores[best], 4), f"best match of the bars' sessions: {runners}"
    return WEEKDAYS, None, f"no calendar matches within {threshold} (best: {runners or 'none'})"


def _match(ts: np.ndarray, interval: int, calendar: str) -> float:
    """How well a calendar explains the bars, from 0 to 1: how closely the weekdays the bars
    skip are the calendar's holidays (Jaccard), provided nearly every bar falls in a session
    (and its hours) and nearly every session has bars; below that, a score under 0.5."""
    if _kind(interval) == "intraday":
        traded, sessions, in_hours = _intraday_days(ts, interval, calendar)
    else:
        traded = np.unique(_local_days(ts, _timezone(calendar, ts)))
        sessions = _session_days(traded, calendar)
        in_hours = float(np.isin(traded, sessions).mean())
    coverage = float(np.isin(sessions, traded).mean()) if len(sessions) else 0.0
    span = np.arange(traded.min(), traded.max() + 1)
    weekdays = span[(span - _EPOCH_MONDAY) % 7 < 5]
    skipped = np.setdiff1d(weekdays, traded)
    holidays = np.setdiff1d(weekdays, sessions)
    union = np.union1d(skipped, holidays)
    agree = len(np.intersect1d(skipped, holidays)) / len(union) if len(union) else 1.0
    if min(in_hours, coverage) < SESSIONS_MATCH:
        return 0.5 * min(in_hours, coverage) * agree
    return agree


def _intraday_days(
    ts: np.ndarray, interval: int, calendar: str
) -> tuple[np.ndarray, np.ndarray, float]:
    """(the session dates with bars, the calendar's session dates over them, the share of
    bars in its open slots); a bar outside every session counts on its local date."""
    timezone = _timezone(calendar, ts)
    table = _sessions_utc(_local_days(ts, timezone), calendar, ts)
    starts, session = _slots(table, interval, timezone)
    order = np.argsort(starts, kind="stable")
    starts, session = starts[order], session[order]
    keys = ts - (_wall(ts, timezone) % interval)
    pos = np.minimum(np.searchsorted(starts, keys), max(len(starts) - 1, 0))
    inside = (starts[pos] == keys) if len(starts) else np.zeros(len(ts), dtype=bool)
    labels = table["label"].to_numpy(np.int64)
    own = labels[session[pos]] if len(starts) else np.zeros(len(ts), dtype=np.int64)
    traded = np.unique(np.where(inside, own, _wall(ts, timezone) // DAY))
    sessions = labels[(labels >= traded.min()) & (labels <= traded.max())]
    return traded, sessions, float(inside.mean())
