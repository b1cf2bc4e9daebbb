"""The quick searches that let a matcher skip its full scan: none may skip a real match."""

from __future__ import annotations

import inspect
import re
from datetime import date

from bench.context_eval import load_cqr
from sidecar.context import cues
from sidecar.context.cues import EN_TIME_CUE, EN_TIME_CUE_WORDS, has_en_time_cue
from sidecar.context.phrasing import LOCATION_QUESTION, TIME_QUESTION, asked
from sidecar.context.timeexpr import _EN_BODY, _EN_FIRST_WORDS, _EN_RE_LOWER, find_times
from sidecar.context.trie import longest_first

# One or more examples of each alternative of the English time pattern, lowercased.
EN_TIMES = [
    "in 3 days", "in a couple of weeks", "in two days", "two weeks from now", "3 days ago",
    "a day later", "2025-06-04", "march 3", "mar. 3rd", "3rd of march", "5 jan", "6/4", "6/4/25",
    "christmas", "christmas eve", "new year's", "new years day", "halloween", "valentine's day",
    "independence day", "the fourth of july", "boxing day", "the day after tomorrow", "the 15th",
    "this month", "next month", "the day after", "the night after", "the next day",
    "the following day", "today and tomorrow", "tomorrow", "tmrw", "tmr", "tomorrow morning",
    "today", "tonight", "right now", "currently", "current", "now", "this morning",
    "this afternoon", "this evening", "today's", "yesterday", "weekend", "this weekend",
    "next weekend", "the next 7 days", "few days", "couple of days", "next 3-days",
    "any day this week", "during the coming week", "for next week", "weekly", "friday",
    "on this friday", "next monday", "this coming tuesday", "wednesdays", "thursday", "saturday",
    "sunday",
    # after the leads the lookahead reads one word further ("the", "in", "a", "an", "for", "on")
    "the weekend", "the week", "the seven days", "the few days", "the couple of days",
    "the three days", "the five days", "for the week", "for coming week", "in 12 days",
    "in twelve weeks", "an day later", "a week from now", "a couple of days ago", "on friday",
    "on next monday", "on coming sunday", "on tuesdays",
]  # fmt: skip
# Named groups of the pattern that are its top-level alternatives.
ALTERNATIVES = {"inn", "lat", "iso", "md", "dm", "slash", "hol", "dat", "dom", "mth", "aft",
                "tt", "tom", "tod", "yes", "wend", "days", "week", "wdx"}  # fmt: skip
PARTS = {"innn", "innu", "latn", "latu", "latd", "mdm", "mdd", "dmd", "dmm", "sm", "sd", "sy",
         "domd", "wendpre", "weekpre", "wdpre", "wd"}  # fmt: skip


def test_every_english_time_holds_a_cue() -> None:
    seen: set[str] = set()
    for text in EN_TIMES:
        matches = list(_EN_RE_LOWER.finditer(text))
        assert matches, text
        for m in matches:
            seen.update(name for name in ALTERNATIVES if m.group(name))
            assert EN_TIME_CUE.search(m.group(0)), m.group(0)
    # A new alternative in the pattern needs an example here (and a cue).
    assert set(_EN_RE_LOWER.groupindex) == ALTERNATIVES | PARTS


def test_a_message_without_a_cue_has_no_time_and_one_with_a_cue_keeps_its_times() -> None:
    today = date(2026, 3, 4)
    assert find_times("tell me a joke", today) == []
    assert find_times("and in Berlin?", today) == []
    found = find_times("Weather in Paris on Friday, then Tomorrow", today)
    assert [(t.expression, t.date) for t in found] == [
        ("Friday", date(2026, 3, 6)),
        ("Tomorrow", date(2026, 3, 5)),
    ]


def test_the_quick_cue_test_finds_what_the_cue_pattern_finds() -> None:
    # has_en_time_cue spells the words out; each must be there, and nothing else.
    source = inspect.getsource(cues.has_en_time_cue)
    spelled = re.findall(r'"([a-z]+)" in lowered', source)
    assert spelled == list(EN_TIME_CUE_WORDS)
    texts = [*EN_TIMES, "tell me a joke", "and in berlin?", "room 5", "thanks.", "", "tmr?"]
    texts += [f"x{w}y" for w in EN_TIME_CUE_WORDS] + [w[:-1] for w in EN_TIME_CUE_WORDS]
    for text in texts:
        assert has_en_time_cue(text) == bool(EN_TIME_CUE.search(text)), text


def test_a_match_names_its_alternative_as_its_last_group() -> None:
    # The resolvers read m.lastgroup to know which alternative matched: the group around the
    # whole alternative must close last, after the groups inside it.
    for text in EN_TIMES:
        for m in _EN_RE_LOWER.finditer(text):
            (matched,) = [name for name in ALTERNATIVES if m.group(name)]
            assert m.lastgroup == matched, (text, m.lastgroup, matched)


def test_the_word_tests_before_the_question_patterns_rule_out_no_question() -> None:
    # asked() looks for the words the patterns' English alternatives need before running them
    # over an ASCII reply: it must answer as the patterns alone do.
    replies = [t["text"] for d in load_cqr() for t in d["turns"] if t["role"] == "assistant"]
    replies += [
        f"{lead} {word}?"
        for lead in ("Sure.", "OK, so", "x" * 230)
        for word in ("WHERE", "Which City", "what  town", "What place", "which AREA",
                     "located", "Location", "when", "WHICH DAYS", "what date", "Specific Day",
                     "which way", "what data", "somewhere", "whenever", "dayton", "update")
    ]  # fmt: skip
    for reply in replies:
        tail = reply[-240:]
        expected = (False, False)
        if "?" in tail or "？" in tail or tail.rstrip().endswith(("吗", "呢")):
            expected = (bool(LOCATION_QUESTION.search(tail)), bool(TIME_QUESTION.search(tail)))
        assert asked(reply) == expected, reply
    assert asked("For which city do you want the forecast?") == (True, False)
    assert asked("Which day works best for you?") == (False, True)


def test_reading_past_the_leads_changes_no_match() -> None:
    # The pattern with every first word alone in its lookahead is the reference; reading one
    # word past "the", "in", "a", "an", "for" and "on" may only save work.
    reference = re.compile(rf"\b(?=(?:{longest_first(sorted(_EN_FIRST_WORDS))})\b|\d){_EN_BODY}")
    for text in EN_TIMES:
        for variant in (text, f"so {text} then", f"on {text}", f"the {text}", f"in {text}"):
            found = [(m.span(), m.lastgroup) for m in _EN_RE_LOWER.finditer(variant)]
            assert found == [(m.span(), m.lastgroup) for m in reference.finditer(variant)], variant
