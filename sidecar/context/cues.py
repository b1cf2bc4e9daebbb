"""Quick searches that show a message cannot hold what a full matcher looks for.

Most messages are plain questions with no date in them; a full scan with a large pattern
tries its alternatives at every word, a search for a few plain words is several times cheaper.
A cue must be found in everything the full matcher can match, so that skipping the scan where
no cue is found changes no result: each says which pattern it stands for and why it covers it.
"""

from __future__ import annotations

import re

# timeexpr._EN_BODY on a lowercased ASCII message: every alternative holds a digit or one of
# these words or word parts ("day" stands for today, yesterday, the weekdays, "the day after";
# "night" for tonight; "tom"/"tmr" for tomorrow, tmrw, tmr; "year" for new year; "july" for
# the fourth of July; "now" for right now; "week" for weekend and weekly).
EN_TIME_CUE_WORDS = (
    "day", "tom", "now", "week", "night", "month", "year", "tmr", "current", "morning",
    "afternoon", "evening", "christmas", "halloween", "valentine", "independence", "july",
    "boxing",
)  # fmt: skip
EN_TIME_CUE = re.compile("[0-9]|" + "|".join(EN_TIME_CUE_WORDS))
_DIGIT = re.compile("[0-9]")


def has_en_time_cue(lowered: str) -> bool:
    """``EN_TIME_CUE.search(lowered)``, a few times cheaper: the pattern tries each of its
    alternatives at every character in turn, while each ``in`` below is one pass in C. The
    words are those of EN_TIME_CUE_WORDS, the commonest first (a test holds them in step)."""
    return (
        "day" in lowered
        or "tom" in lowered
        or "now" in lowered
        or "week" in lowered
        or "night" in lowered
        or "month" in lowered
        or "year" in lowered
        or "tmr" in lowered
        or "current" in lowered
        or "morning" in lowered
        or "afternoon" in lowered
        or "evening" in lowered
        or "christmas" in lowered
        or "halloween" in lowered
        or "valentine" in lowered
        or "independence" in lowered
        or "july" in lowered
        or "boxing" in lowered
        or _DIGIT.search(lowered) is not None
    )
