"""MLink DateTime text -> nanoseconds since the Unix epoch (UTC), fast.

MLink prints DateTime fields as `YYYY-MM-DD HH:MM:SS.ffffff` in UTC. A stream carries thousands
of these per second and most share their date and second, so `DateTimeParser` slices the text
and caches the nanoseconds of each `YYYY-MM-DD` and each `YYYY-MM-DD HH:MM:SS` it has seen:
the common case is one dictionary lookup and one `int()` of the fraction, never `strptime`.

Accepted: a `T` instead of the space, 0 to 9 fraction digits, an optional trailing `Z`.
Anything else raises ValueError naming the text.
"""

from __future__ import annotations

from datetime import date

__all__ = ["DateTimeParser"]

_NS_PER_DAY = 86_400 * 1_000_000_000
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
# Scale of a fraction with n digits to nanoseconds.
_FRACTION_SCALE = tuple(10 ** (9 - n) for n in range(10))
_DIGITS = frozenset("0123456789")


class DateTimeParser:
    """Parses MLink DateTime text into ns since the epoch; keeps a bounded cache per instance.

    The cache only remembers results, so one parser gives the same answer as a fresh one; it is
    emptied when it reaches `max_cached` entries so that memory stays bounded.
    """

    __slots__ = ("_days", "_max_cached", "_seconds")

    def __init__(self, max_cached: int = 4096) -> None:
        self._days: dict[str, int] = {}
        self._seconds: dict[str, int] = {}
        self._max_cached = max_cached

    def __call__(self, text: str) -> int:
        base = self._seconds.get(text[:19])
        if base is None:
            base = self._second(text)
        # MLink's own form: 26 characters, six fraction digits.
        if len(text) == 26 and text[19] == ".":
            fraction = text[20:]
            if fraction.isdigit() and fraction.isascii():
                return base + int(fraction) * 1000
        return base + self._fraction(text)

    def _second(self, text: str) -> int:
        prefix = text[:19]
        if len(prefix) != 19 or not (
            prefix[4] == "-"
            and prefix[7] == "-"
            and prefix[10] in " T"
            and prefix[13] == ":"
            and prefix[16] == ":"
        ):
            raise ValueError(f"not an MLink DateTime (YYYY-MM-DD HH:MM:SS.ffffff): {text!r}")
        day = self._days.get(prefix[:10])
        if day is None:
            day = self._day(text)
        clock = (prefix[11:13], prefix[14:16], prefix[17:19])
        if not all(set(part) <= _DIGITS for part in clock):
            raise ValueError(f"not an MLink DateTime (bad time of day): {text!r}")
        hour, minute, second = (int(part) for part in clock)
        if hour > 23 or minute > 59 or second > 59:
            raise ValueError(f"not an MLink DateTime (time of day out of range): {text!r}")
        ns = day + ((hour * 60 + minute) * 60 + second) * 1_000_000_000
        if len(self._seconds) >= self._max_cached:
            self._seconds.clear()
        self._seconds[prefix] = ns
        return ns

    def _day(self, text: str) -> int:
        parts = (text[0:4], text[5:7], text[8:10])
        if not all(set(part) <= _DIGITS for part in parts):
            raise ValueError(f"not an MLink DateTime (bad date): {text!r}")
        try:
            ordinal = date(int(parts[0]), int(parts[1]), int(parts[2])).toordinal()
        except ValueError:
            raise ValueError(f"not an MLink DateTime (no such date): {text!r}") from None
        ns = (ordinal - _EPOCH_ORDINAL) * _NS_PER_DAY
        if len(self._days) >= self._max_cached:
            self._days.clear()
        self._days[text[:10]] = ns
        return ns

    @staticmethod
    def _fraction(text: str) -> int:
        rest = text[19:]
        if rest.endswith("Z"):
            rest = rest[:-1]
        if not rest:
            return 0
        digits = rest[1:]
        if rest[0] != "." or not 1 <= len(digits) <= 9 or not set(digits) <= _DIGITS:
            raise ValueError(f"not an MLink DateTime (bad fraction of a second): {text!r}")
        scale: int = _FRACTION_SCALE[len(digits)]
        return int(digits) * scale
