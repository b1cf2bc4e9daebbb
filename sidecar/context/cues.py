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
EN_TIME_CUE = re.compile(
    r"[0-9]|day|week|month|year|tom|tmr|now|current|night|morning|afternoon|evening"
    r"|christmas|halloween|valentine|independence|july|boxing"
)
