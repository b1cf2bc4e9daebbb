"""Relative and absolute time expressions in Chinese and English → ISO dates.

Ranges resolve to their first day that is not already past: "this weekend"/"这周末" is the
coming Saturday (today when it is Saturday or Sunday), "next week"/"下周" is the Monday of next
week, "this week"/"本周"/"next 7 days" is today. A bare weekday ("Friday", "周五") is its next
occurrence counting today; "this Friday"/"这周五" is the Friday of the current Monday-based week;
"next Friday"/"下周五" the Friday of next week; "this Friday"/"这周五" is never in the past: asked on
a Saturday it is the Friday to come. A month and day without a year ("March 3",
"3月3日") is in the current year unless that is more than 30 days past, then in the next year;
a bare "15号" is in the current month unless already past, then next month.

Counted offsets: "in 3 days", "two weeks from now", 三天后, 十天以后, 两周后 count from today (Chinese
numerals through cn2an); "the day after", "two days later", 第二天, 隔天 count from the date under
discussion (the ``anchor``), and their match is marked ``anchored``: the words only make sense
next to that date, so a completion states the date instead.
"""

from __future__ import annotations

import functools
import re
from datetime import date, timedelta

from sidecar.context.cues import has_en_time_cue
from sidecar.context.lexicon import words
from sidecar.context.trie import longest_first

from ..frozen import frozen


@frozen
class TimeMatch:
    expression: str  # the user's words, trimmed
    date: date
    start: int
    end: int
    lang: str  # "zh" or "en"
    anchored: bool = False  # counted from the date under discussion ("the day after")


_ZH_DIGITS = {"零": 0, "〇": 0, "一": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5, "六": 6,
              "七": 7, "八": 8, "九": 9}  # fmt: skip
_ZH_WEEKDAY = {"一": 0, "二": 1, "三": 2, "四": 3, "五": 4, "六": 5, "日": 6, "天": 6, "七": 6,
               "1": 0, "2": 1, "3": 2, "4": 3, "5": 4, "6": 5, "7": 6}  # fmt: skip
_EN_WEEKDAY = {"mon": 0, "tue": 1, "wed": 2, "thu": 3, "fri": 4, "sat": 5, "sun": 6}
_EN_MONTH = {"jan": 1, "feb": 2, "mar": 3, "apr": 4, "may": 5, "jun": 6, "jul": 7, "aug": 8,
             "sep": 9, "oct": 10, "nov": 11, "dec": 12}  # fmt: skip

_HAN = re.compile(r"[\u4e00-\u9fff]")
_LATIN = re.compile(r"[A-Za-z]")
_ZH_GLUE = frozenset("以之最然午先事饭会课前后")
_ZH_OFFSETS = {"今": 0, "明": 1, "后": 2, "大后": 3, "昨": -1, "前": -2, "大前": -3}

_ZH_NUM = r"[0-9０-９]{1,2}|[一二三四五六七八九十]{1,3}"
_ZH_COUNT = r"[0-9０-９]{1,3}|[一二两三四五六七八九十百]{1,4}"
# The characters a match can start with (\d: years, ISO dates): one test at each character
# instead of every alternative below at every character. The matches are the same.
_ZH_FIRST = (
    r"[\d０-９一二两三四五六七八九十百第次隔翌听寻元劳国圣平情万儿跨春过除大中重端"
    r"下这本今明后昨前现此目当上呢周星礼]"
)
_ZH_RE = re.compile(
    rf"(?={_ZH_FIRST})(?:"
    rf"(?P<cnt>(?P<cntn>{_ZH_COUNT})个?(?P<cntu>天|日|周|星期|礼拜|个月)(?P<cntd>以后|之后|过后|后|以前|之前|前))"
    r"|(?P<nxt>第二天|第二日|次日|隔天|翌日)"
    r"|(?P<yue>听日|寻日)"
    r"|(?P<hol>元旦|五一|劳动节|国庆节?|圣诞节?|平安夜|情人节|万圣节|儿童节|跨年夜)"
    r"|(?P<lun>春节|过年|除夕|大年三十|元宵节?|端午节?|七夕节?|中秋节?|重阳节?)"
    r"|(?P<iso>\d{4}-\d{1,2}-\d{1,2})"
    r"|(?P<mth>下下个?|下个?|这个?|本)月(?![0-9０-９一二三四五六七八九十]|[底初中])"
    rf"|(?:(?P<zy>\d{{4}})年)?(?P<zm>{_ZH_NUM})月(?:(?P<zd>{_ZH_NUM})[日号號])?"
    rf"|(?P<zdo>{_ZH_NUM})[号號]"
    r"|(?P<rel>大后|大前|今|明|后|昨|前)(?:天|日|儿|晚|早|夜)"
    r"(?:(?:早上|上午|中午|下午|晚上|夜里|白天)|(?:和|跟|与)?(?:明|后)天)?"
    r"|今明两天|现在|此刻|目前|当前|这会儿"
    r"|(?P<wkpre>下下|下个?|上个?|这个?|本|呢个)?(?P<wk>周|星期|礼拜)(?P<wd>[一二三四五六日天1-7]|末)?"
    r")"
)

_EN_WD = r"(?:mon|tues|wednes|thurs|fri|satur|sun)days?"
_EN_MON = (
    r"(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?"
    r"|sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)"
)
_EN_NUM = (
    r"\d{1,2}|an?|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|a\s+couple\s+of"
)
_EN_NUMBERS = {"a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6,
               "seven": 7, "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12,
               "a couple of": 2}  # fmt: skip
# Every alternative below starts a word with one of these or a digit: a lookahead on them (or on
# a non-ASCII word, IGNORECASE folds "ſ" to "s") instead of every alternative at every word.
_EN_FIRST_WORDS = words(
    """
    in a an one two three four five six seven eight nine ten eleven twelve couple few
    jan january feb february mar march apr april may jun june jul july aug august
    sep sept september oct october nov november dec december
    christmas new halloween valentine valentines independence boxing
    the this next coming any during for on weekend weekly
    today tonight right currently current now tomorrow tmrw tmr yesterday
    monday mondays tuesday tuesdays wednesday wednesdays thursday thursdays
    friday fridays saturday saturdays sunday sundays
    """
)
# The commonest of them start ordinary sentences far more often than times ("the weather",
# "in Paris", "a joke", "for me", "on it"): for those the lookahead also asks for a word that
# can follow them in some alternative, so that the alternatives are not all tried after each.
# (A digit may follow each: "the 15th", "in 3 days".)
_EN_LEADS = {
    "the": "fourth day night next following week seven few couple three five",
    "in": "a one two three four five six seven eight nine ten eleven twelve",
    "an?": "day week couple",
    "for": "this next the coming",
    "on": "this next coming mon tues wednes thurs fri satur sun",
}
_EN_START = "|".join(
    [
        rf"(?:{longest_first(sorted(_EN_FIRST_WORDS - {'the', 'in', 'a', 'an', 'for', 'on'}))})\b",
        r"\d",
        *(rf"{lead}\s+(?:{'|'.join(after.split())}|\d)" for lead, after in _EN_LEADS.items()),
    ]
)
_EN_BODY = (
    r"(?:"
    rf"(?P<inn>in\s+(?P<innn>{_EN_NUM})\s+(?P<innu>days?|weeks?))"
    rf"|(?P<lat>(?P<latn>{_EN_NUM})\s+(?P<latu>days?|weeks?)\s+"
    r"(?P<latd>later|after(?:wards)?|from\s+now|from\s+today|ago))"
    r"|(?P<iso>\d{4}-\d{1,2}-\d{1,2})"
    rf"|(?P<md>(?P<mdm>{_EN_MON})\.?\s+(?P<mdd>\d{{1,2}})(?:st|nd|rd|th)?)\b"
    rf"|(?P<dm>(?P<dmd>\d{{1,2}})(?:st|nd|rd|th)?\s+(?:of\s+)?(?P<dmm>{_EN_MON}))\b"
    r"|(?P<slash>(?P<sm>\d{1,2})/(?P<sd>\d{1,2})(?:/(?P<sy>\d{2,4}))?)\b"
    r"|(?P<hol>christmas(?:\s+(?:day|eve))?|new\s+year'?s?(?:\s+(?:day|eve))?|halloween|"
    r"valentine'?s(?:\s+day)?|independence\s+day|the\s+fourth\s+of\s+july|boxing\s+day)"
    r"|(?P<dat>the\s+day\s+after\s+tomorrow)"
    r"|(?P<dom>the\s+(?P<domd>\d{1,2})(?:st|nd|rd|th))"
    r"|(?P<mth>(?:this|next)\s+month)"
    r"|(?P<aft>the\s+(?:day|night)\s+after|the\s+(?:next|following)\s+day)"
    r"|(?P<tt>today\s+and\s+tomorrow)"
    r"|(?P<tom>tomorrow|tmrw|tmr)(?:'s)?(?:\s+(?:morning|afternoon|evening|night))?"
    r"|(?P<tod>today|tonight|right\s+now|currently|current|now|"
    r"this\s+(?:morning|afternoon|evening))(?:'s)?"
    r"|(?P<yes>yesterday)(?:'s)?"
    r"|(?P<wend>(?:(?P<wendpre>this|next|the|this\s+coming)\s+)?weekend)"
    r"|(?P<days>(?:the\s+)?(?:next\s+)?(?:7|seven|few|couple\s+of|3|three|5|five)[\s-]days?)"
    r"|(?P<week>(?:any\s+day\s+|during\s+|for\s+)?(?P<weekpre>this|next|the|coming)\s+week(?:'s|s)?"
    r"|weekly)"
    rf"|(?:on\s+)?(?P<wdx>(?:(?P<wdpre>this|next|coming|this\s+coming)\s+)?(?P<wd>{_EN_WD}))"
    r")\b"
)
_EN_RE = re.compile(rf"\b(?={_EN_START}|(?-i:\w*[^\W\x00-\x7f])){_EN_BODY}", re.IGNORECASE)
# An ASCII message is matched lowercased: no word with a non-ASCII letter to try, and without
# IGNORECASE the engine skips the first words' branches that cannot fit in one test each.
_EN_RE_LOWER = re.compile(rf"\b(?={_EN_START}){_EN_BODY}")


# "for this week" → "this week", "today's" → "today"
_EN_TRIM = re.compile(r"^for\s+|'s$", re.IGNORECASE)


def _zh_int(text: str) -> int:
    text = text.translate(str.maketrans("０１２３４５６７８９", "0123456789"))
    if text.isdigit():
        return int(text)
    if "十" in text:
        tens, _, ones = text.partition("十")
        return (_ZH_DIGITS.get(tens, 1) if tens else 1) * 10 + (_ZH_DIGITS.get(ones, 0))
    return _ZH_DIGITS.get(text, 0)


def _month_day(today: date, month: int, day: int, year: int | None = None) -> date | None:
    try:
        if year is not None:
            return date(year, month, day)
        candidate = date(today.year, month, day)
        if (today - candidate).days > 30:
            candidate = date(today.year + 1, month, day)
        return candidate
    except ValueError:
        return None


def _day_of_month(today: date, day: int) -> date | None:
    year, month = today.year, today.month
    for _ in range(3):
        try:
            candidate = date(year, month, day)
        except ValueError:
            candidate = None
        if candidate is not None and candidate >= today:
            return candidate
        month += 1
        if month > 12:
            year, month = year + 1, 1
    return None


def _weekday(today: date, wd: int, prefix: str) -> date:
    monday = today - timedelta(days=today.weekday())
    if prefix in ("下下",):
        return monday + timedelta(days=14 + wd)
    if prefix.startswith("下") or prefix == "next":
        return monday + timedelta(days=7 + wd)
    if prefix.startswith("上") or prefix == "last":
        return monday + timedelta(days=-7 + wd)
    if prefix in ("这", "这个", "本", "this", "呢个"):
        this_week = monday + timedelta(days=wd)
        return this_week if this_week >= today else this_week + timedelta(days=7)
    return today + timedelta(days=(wd - today.weekday()) % 7)


def _weekend(today: date, next_week: bool) -> date:
    monday = today - timedelta(days=today.weekday())
    if next_week:
        return monday + timedelta(days=12)
    saturday = monday + timedelta(days=5)
    return max(saturday, today)


@functools.lru_cache(maxsize=256)
def _zh_count(text: str) -> int | None:
    text = text.translate(str.maketrans("０１２３４５６７８９", "0123456789"))
    if text.isdigit():
        return int(text)
    import cn2an  # imported on first use: it costs a tenth of a second

    try:
        return int(cn2an.cn2an(text, "smart"))
    except (ValueError, KeyError, TypeError):
        return None


# Fixed-date holidays (month, day).
_HOLIDAYS = {"元旦": (1, 1), "五一": (5, 1), "劳动节": (5, 1), "国庆": (10, 1), "国庆节": (10, 1),
             "圣诞": (12, 25), "圣诞节": (12, 25), "平安夜": (12, 24), "情人节": (2, 14),
             "万圣节": (10, 31), "儿童节": (6, 1), "跨年夜": (12, 31), "christmas": (12, 25),
             "christmas day": (12, 25), "christmas eve": (12, 24), "new year": (1, 1),
             "new years": (1, 1), "new year's": (1, 1), "new year's day": (1, 1),
             "new years day": (1, 1), "new year's eve": (12, 31), "new years eve": (12, 31),
             "halloween": (10, 31), "valentine's": (2, 14), "valentines": (2, 14),
             "valentine's day": (2, 14), "valentines day": (2, 14), "independence day": (7, 4),
             "the fourth of july": (7, 4), "boxing day": (12, 26)}  # fmt: skip


def _holiday(name: str, today: date) -> date | None:
    """The next time the holiday comes (today counts)."""
    month_day = _HOLIDAYS.get(" ".join(name.lower().split()))
    if month_day is None:
        return None
    this_year = date(today.year, *month_day)
    return this_year if this_year >= today else date(today.year + 1, *month_day)


# Lunar-calendar festivals (lunar month, day); 除夕 is the day before the new year.
_LUNAR = {"春节": (1, 1), "过年": (1, 1), "元宵": (1, 15), "端午": (5, 5), "七夕": (7, 7),
          "中秋": (8, 15), "重阳": (9, 9)}  # fmt: skip


def _lunar(name: str, today: date) -> date | None:
    """The next time a lunar festival comes, through ``lunardate`` (imported on first use)."""
    from lunardate import LunarDate  # imported on first use: few messages need it

    eve = name in ("除夕", "大年三十")
    key = "春节" if eve or name == "春节" else name.removesuffix("节")
    month, day = _LUNAR[key]
    for year in (today.year - 1, today.year, today.year + 1):
        try:
            solar: date = LunarDate(year + (1 if eve else 0), month, day).to_solar_date()
        except ValueError:
            return None
        solar -= timedelta(days=1 if eve else 0)
        if solar >= today:
            return solar
    return None


_ZH_UNIT_DAYS = {"天": 1, "日": 1, "周": 7, "星期": 7, "礼拜": 7, "个月": 30}


def _month_start(today: date, ahead: int) -> date:
    """The first day of the month ``ahead`` months on; this month is today (not yet past)."""
    if ahead == 0:
        return today
    month = today.month - 1 + ahead
    return date(today.year + month // 12, month % 12 + 1, 1)


def _zh_match(m: re.Match[str], today: date, anchor: date) -> date | None:
    g = m  # m[name] is the group or None, as in groupdict() but without building it
    # The alternative that matched, in one lookup: the last group to close is the named group
    # around the alternative, or the last one inside it (zm/zd, wk/wd); None: 现在, 目前...
    kind = m.lastgroup
    if kind == "mth":
        return _month_start(today, g["mth"].count("下"))
    if kind == "cnt":
        n = _zh_count(g["cntn"])
        if n is None or n > 400:
            return None
        sign = -1 if g["cntd"].endswith("前") else 1
        return today + timedelta(days=sign * n * _ZH_UNIT_DAYS[g["cntu"]])
    if kind == "nxt":
        return anchor + timedelta(days=1)
    if kind == "yue":
        return today + timedelta(days=1 if g["yue"] == "听日" else -1)
    if kind == "hol":
        return _holiday(g["hol"], today)
    if kind == "lun":
        return _lunar(g["lun"], today)
    if kind == "iso":
        y, mo, d = (int(x) for x in g["iso"].split("-"))
        return _month_day(today, mo, d, y)
    if kind == "zm" or kind == "zd":
        year = int(g["zy"]) if g["zy"] else None
        day = _zh_int(g["zd"]) if g["zd"] else 1
        return _month_day(today, _zh_int(g["zm"]), day, year)
    if kind == "zdo":
        return _day_of_month(today, _zh_int(g["zdo"]))
    if kind == "rel":
        return today + timedelta(days=_ZH_OFFSETS[g["rel"]])
    if kind == "wk" or kind == "wd":
        prefix = g["wkpre"] or ""
        wd = g["wd"]
        if wd == "末":
            return _weekend(today, prefix.startswith("下"))
        if wd:
            return _weekday(today, _ZH_WEEKDAY[wd], prefix)
        if not prefix:
            return None  # a bare 周/星期 is not a time
        if prefix.startswith("下"):
            return today - timedelta(days=today.weekday()) + timedelta(days=7)
        if prefix.startswith("上"):
            return today - timedelta(days=today.weekday()) - timedelta(days=7)
        return today
    return today  # 现在, 目前, 今明两天...


def _en_count(number: str, unit: str) -> int:
    n = _EN_NUMBERS.get(" ".join(number.lower().split())) or int(number)
    return n * (7 if unit.lower().startswith("week") else 1)


def _en_match(m: re.Match[str], today: date, anchor: date) -> date | None:
    g = m  # m[name] is the group or None, as in groupdict() but without building it
    # The alternative that matched, in one lookup: each is a named group around the whole
    # alternative, which closes after the groups inside it.
    kind = m.lastgroup
    if kind == "inn":
        return today + timedelta(days=_en_count(g["innn"], g["innu"]))
    if kind == "lat":
        days = _en_count(g["latn"], g["latu"])
        direction = g["latd"].lower()
        if direction == "ago":
            return today - timedelta(days=days)
        if direction.startswith("from"):
            return today + timedelta(days=days)
        return anchor + timedelta(days=days)
    if kind == "aft":
        return anchor + timedelta(days=1)
    if kind == "dom":
        return _day_of_month(today, int(g["domd"]))
    if kind == "mth":
        return _month_start(today, 1 if g["mth"].lower().startswith("next") else 0)
    if kind == "hol":
        return _holiday(g["hol"], today)
    if kind == "iso":
        y, mo, d = (int(x) for x in g["iso"].split("-"))
        return _month_day(today, mo, d, y)
    if kind == "md":
        return _month_day(today, _EN_MONTH[g["mdm"][:3].lower()], int(g["mdd"]))
    if kind == "dm":
        return _month_day(today, _EN_MONTH[g["dmm"][:3].lower()], int(g["dmd"]))
    if kind == "slash":
        year = int(g["sy"]) if g["sy"] else None
        if year is not None and year < 100:
            year += 2000
        return _month_day(today, int(g["sm"]), int(g["sd"]), year)
    if kind == "dat":
        return today + timedelta(days=2)
    if kind == "tom":
        return today + timedelta(days=1)
    if kind == "yes":
        return today - timedelta(days=1)
    if kind == "wend":
        return _weekend(today, (g["wendpre"] or "").lower() == "next")
    if kind == "week":
        if (g["weekpre"] or "").lower() == "next":
            return today - timedelta(days=today.weekday()) + timedelta(days=7)
        return today
    if kind == "wdx":
        prefix = " ".join((g["wdpre"] or "").lower().split())
        prefix = "this" if prefix == "this coming" else prefix
        if prefix == "coming":
            prefix = ""
        return _weekday(today, _EN_WEEKDAY[g["wd"][:3].lower()], prefix)
    return today  # today, tonight, now, next 7 days...


def find_times(text: str, today: date, anchor: date | None = None) -> list[TimeMatch]:
    """Every time expression in ``text``, in order, resolved relative to ``today`` (and to
    ``anchor``, the date under discussion, for "the day after"; today when there is none).

    Chinese is matched in Simplified characters: pass Traditional text through
    ``script.to_simplified`` first (same length, so the spans hold for the user's text).
    """
    found: list[TimeMatch] = []
    base = anchor or today
    ascii_text = text.isascii()
    if not ascii_text and _HAN.search(text):
        for m in _ZH_RE.finditer(text):
            if m.group("rel") in ("前", "后") and m.start() and text[m.start() - 1] in _ZH_GLUE:
                continue  # 以前天气 / 之后天晴: the character belongs to the word before
            resolved = _zh_match(m, today, base)
            if resolved is not None:
                anchored = m.lastgroup == "nxt"
                found.append(TimeMatch(m.group(0), resolved, m.start(), m.end(), "zh", anchored))
    if ascii_text:  # lowercased: the same positions and groups (read lowercased)
        if not has_en_time_cue(lowered := text.lower()):
            return found  # empty: an ASCII message holds no Chinese time either
        matches = _EN_RE_LOWER.finditer(lowered)
    elif _LATIN.search(text):
        matches = _EN_RE.finditer(text)
    else:
        return found
    for m in matches:
        end = m.end()
        if found and any(t.start < end and m.start() < t.end for t in found):
            continue
        resolved = _en_match(m, today, base)
        if resolved is None:
            continue
        kind = m.lastgroup  # the alternative that matched, as in _en_match
        start = m.start("wdx") if kind == "wdx" else m.start()
        expr = text[start:end]
        if "'" in expr or expr[:3].lower() == "for":  # what _EN_TRIM can cut (seldom there)
            expr = _EN_TRIM.sub("", expr)
        if "  " in expr or not expr.isprintable():
            # words apart by more than one space: printable text holds no whitespace but " "
            expr = " ".join(expr.split())
        anchored = kind == "aft" or (
            kind == "lat" and m.group("latd").lower().startswith(("later", "after"))
        )
        found.append(TimeMatch(expr, resolved, start, end, "en", anchored))
    if len(found) > 1:
        found.sort(key=lambda t: t.start)
    return found


def render_date(day: date, today: date, lang: str) -> str:
    """Words for ``day`` in ``lang`` when the user's own expression is in the other language."""
    delta = (day - today).days
    if lang == "zh":
        names = {0: "今天", 1: "明天", 2: "后天", 3: "大后天", -1: "昨天", -2: "前天"}
        return names.get(delta, f"{day.month}月{day.day}日")
    names = {0: "today", 1: "tomorrow", 2: "the day after tomorrow", -1: "yesterday"}
    return names.get(delta, f"on {day.strftime('%B')} {day.day}")
