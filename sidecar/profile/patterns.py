"""The word patterns of fact extraction: what states a fact, and what makes a clause not a
statement about its author now (a question, the past, a hypothesis, a negation)."""

from __future__ import annotations

import re

from ..context.lexicon import words

FACTS = ("home_location", "units", "language", "name")

# Nothing below can match a message without one of these.
TRIGGER = re.compile(
    r"我|叫|用|说|讲|住|搬|驻|人在|回[答复]|华氏|摄氏|公制|英制|"
    r"\b(?:i|i'm|i’m|im|my|me|use|using|in|metric|imperial|fahrenheit|celsius|speak|answer|"
    r"reply|respond|talk|write|switch|set|temperatures?|distances?)\b",
    re.IGNORECASE,
)

# Sentences: a period ends one only before a space or the end, and never after a title
# ("St. Louis", "Dr. Smith").
CLAUSES = re.compile(
    r"(?:[^。！？!?；;\n.]|(?<=St|Dr|Mr|Ms)\.|(?<=Mrs)\.|(?<=Prof)\.|\.(?!\s|$))+[。！？!?；;.]*"
)
ZH_SUBCLAUSES = re.compile(r"[^，,]+")

# --- what makes a clause not a statement about the user now ---------------------------------

EN_QUESTION = re.compile(
    r"^\s*(?:do|does|did|am|is|are|was|were|have|has|had|will|shall|should|where|what|which|"
    r"who|whom|whose|when|why|how|isn't|aren't|don't|doesn't)\b",
    re.IGNORECASE,
)
# "can you / could you ... use X" is a request, not a question about the user.
EN_REQUEST = re.compile(
    r"^\s*(?:(?:can|could|would|will)\s+you|would\s+you\s+mind|please)\b", re.IGNORECASE
)
EN_PAST = re.compile(
    r"\b(?:last\s+(?:year|month|week|summer|winter|spring|autumn|fall|time)|ago|used\s+to|"
    r"back\s+then|back\s+in|previously|formerly|in\s+the\s+past|when\s+i\s+was|as\s+a\s+kid|"
    r"as\s+a\s+child|years?\s+before|(?:19|20)\d\d)\b",
    re.IGNORECASE,
)
EN_HYPOTHETICAL = re.compile(
    r"\b(?:if|suppose|supposing|imagine|pretend|unless|whether|would|wish)\b", re.IGNORECASE
)
ZH_QUESTION = re.compile(
    r"[吗嘛么呢]\s*[。！]?\s*$|[?？]|什么|哪里|哪儿|哪个|怎么|是否|有没有|是不是"
)
# "能不能 / 可以…吗" asking for a unit or a language is a request; it is let through below.
ZH_REQUEST = re.compile(r"^(?:请|麻烦|能不能|能否|可不可以|可以|以后|今后|之后|从现在起|从今以后)")
ZH_PAST = re.compile(
    r"去年|前年|以前|曾经|之前|过去|小时候|那时|当时|那年|年前|上个月|上周|上星期|昨天|前天|"
    r"原来|本来|早年|读书时|上学时|(?:19|20)\d\d年"
)
ZH_HYPOTHETICAL = re.compile(r"如果|假如|要是|假设|万一|想象|假装|希望|想去|打算|计划|准备")
ZH_NEGATION = re.compile(r"不|没|别|非")

# --- where the user lives or is ---------------------------------------------------------------

ZH_ADVERBS = (
    r"(?:现在|目前|如今|眼下|这几天|这周|今天|一直|常年|长期|已经|暂时|平时|也|还|都|正|就)*"
)
ZH_LOCATION = re.compile(
    r"我"
    + ZH_ADVERBS
    + r"(?:人在|住在|住|家在|定居在|定居|生活在|居住在|常驻|驻扎在|搬到了?|搬去了?|"
    r"搬家到了?|在)(?:了)?"
    # Chinese often drops the subject: "现在搬到上海了" at the start of a sentence is the user's.
    r"|^" + ZH_ADVERBS + r"(?:人在|住在|家在|定居在|搬到了?|搬去了?|搬家到了?)"
)
ZH_NOT_PLACE_AFTER = re.compile(r"^(?:的时候|时|那年|期间)")
ZH_BARE_END = re.compile(r"^(?:了|啦|啊|呀|出差|工作|上班|读书|上学|旅游)*[。！!，,]*$")

EN_ADVERBS = r"(?:(?:currently|now|still|actually|just|recently|finally|mostly|mainly)\s+)*"
EN_LOCATION = re.compile(
    r"\b(?:i|im)(?:\s+|'m\s+|’m\s+|\s+am\s+)?" + EN_ADVERBS + r"(?:"
    r"(?:live|reside|stay|am\s+living|'m\s+living|am\s+staying|'m\s+staying|living|staying|"
    r"am\s+based|'m\s+based|based|am\s+located|'m\s+located|located|am|'m|’m|"
    r"moved|have\s+moved|'ve\s+moved|relocated|have\s+relocated|'ve\s+relocated)"
    r")\s+" + EN_ADVERBS + r"(?:in|to|at)\s+(?:the\s+(?:city|town)\s+of\s+)?",
    re.IGNORECASE,
)
EN_LOCATION_SIMPLE = re.compile(
    r"\b(?:my\s+home\s+is\s+in|home\s+is\s+in|i\s+call\s+(?=\S+\s+home\b))\s*", re.IGNORECASE
)
# After "I'm in X", what makes it a stay and not "I'm in a meeting" / "I'm in love".
EN_PLAIN_IN = re.compile(r"\bi(?:'m|’m|\s+am)\s+" + EN_ADVERBS + r"in\s+$", re.IGNORECASE)

# --- units ------------------------------------------------------------------------------------

UNITS = {
    "华氏": "imperial",
    "英制": "imperial",
    "英里": "imperial",
    "摄氏": "metric",
    "公制": "metric",
    "公里": "metric",
    "fahrenheit": "imperial",
    "imperial": "imperial",
    "miles": "imperial",
    "us units": "imperial",
    "american units": "imperial",
    "celsius": "metric",
    "centigrade": "metric",
    "metric": "metric",
    "kilometers": "metric",
    "kilometres": "metric",
    "km": "metric",
    "si units": "metric",
}
ZH_UNITS = re.compile(
    r"(?:^|请|麻烦|能不能|能否|可以|可不可以|以后|今后|都|就|温度|气温|我(?:习惯|喜欢|偏好|更喜欢|想要|要)?)"
    r"(?:用|使用|改用|换成|改成|换用|以|按)(华氏|摄氏|公制|英制|英里|公里)"
)
EN_UNIT_WORDS = (
    r"(fahrenheit|celsius|centigrade|metric|imperial|miles|kilometers|kilometres|km|us\s+units|"
    r"american\s+units|si\s+units)"
)
EN_UNITS = re.compile(
    r"(?:^\s*(?:please\s+|pls\s+|(?:can|could|would|will)\s+you\s+(?:please\s+)?|always\s+|"
    r"from\s+now\s+on,?\s+)*(?:use|switch\s+to|change\s+to|go\s+with|stick\s+to|"
    r"set\s+(?:the\s+)?units\s+to|(?:temperatures?|distances?)\s+in|"
    r"(?:give|show|tell)\s+me\s+(?:\w+\s+){0,2}in|answer\s+in|reply\s+in)\s+(?:the\s+)?"
    + EN_UNIT_WORDS
    + r"|\bi(?:\s+|(?=['’]))(?:prefer|like|want|use|'d\s+like|would\s+like|'d\s+prefer|would\s+prefer|"
    r"only\s+use|think\s+in|go\s+by)\s+(?:to\s+use\s+)?(?:the\s+)?(?:temperatures?\s+in\s+)?"
    + EN_UNIT_WORDS
    + r"|^\s*(?:in\s+)?"
    + EN_UNIT_WORDS
    + r"(?:\s+(?:units|system|degrees))?[\s,]*(?:please|pls|thanks|thank\s+you))\b",
    re.IGNORECASE,
)

# --- language ---------------------------------------------------------------------------------

LANGUAGES = {
    "中文": "zh",
    "汉语": "zh",
    "普通话": "zh",
    "华语": "zh",
    "英文": "en",
    "英语": "en",
    "日语": "ja",
    "日文": "ja",
    "韩语": "ko",
    "韩文": "ko",
    "法语": "fr",
    "法文": "fr",
    "德语": "de",
    "德文": "de",
    "西班牙语": "es",
    "chinese": "zh",
    "mandarin": "zh",
    "english": "en",
    "japanese": "ja",
    "korean": "ko",
    "french": "fr",
    "german": "de",
    "spanish": "es",
}
ZH_LANG_NAMES = "中文|汉语|普通话|华语|英文|英语|日语|日文|韩语|韩文|法语|法文|德语|德文|西班牙语"
ZH_LANGUAGE = re.compile(
    r"(?:^|请|麻烦|能不能|能否|可以|可不可以|以后|今后|都|就|我(?:习惯|喜欢|偏好|更喜欢|想要|想|要)?)"
    r"(?:用|使用|改用|换成|改成|说|讲)(" + ZH_LANG_NAMES + r")"
    r"(?:回答|回复|答复|交流|聊天|聊|说话|沟通|和我说|跟我说|对话|写|吧|就行|就好|$)"
)
EN_LANG_NAMES = r"(chinese|mandarin|english|japanese|korean|french|german|spanish)"
EN_LANGUAGE = re.compile(
    r"(?:^\s*(?:please\s+|pls\s+|(?:can|could|would|will)\s+you\s+(?:please\s+)?|always\s+|"
    r"from\s+now\s+on,?\s+)*(?:answer|reply|respond|speak|talk|write|switch|chat)\s+"
    r"(?:to\s+me\s+|me\s+)?(?:(?:in|to)\s+)?"
    + EN_LANG_NAMES
    + r"|\bi(?:\s+|(?=['’]))(?:prefer|'d\s+prefer|would\s+prefer|'d\s+rather\s+speak|want\s+answers\s+in|"
    r"prefer\s+answers\s+in|prefer\s+to\s+speak|(?:'d|would)\s+like\s+(?:answers|replies)\s+in)\s+"
    + EN_LANG_NAMES
    + r"|^\s*(?:in\s+)?"
    + EN_LANG_NAMES
    + r"[\s,]*(?:please|pls))\b",
    re.IGNORECASE,
)

# --- name -------------------------------------------------------------------------------------

ZH_NAME = re.compile(
    r"(?:(?:^|请|你|您|可以|就|以后|今后|都)叫我|我叫|我的名字(?:是|叫)|我名字(?:是|叫)|我是)"
    r"([\u4e00-\u9fff]{1,4}|[A-Za-z][A-Za-z .'-]{0,30}?)"
    r"(?:就行|就好|就可以|吧|好了|呀|啊|哦|。|！|，|,|\.|!|\s*$)"
)
ZH_NOT_NAME = words(
    "外卖 车 出租车 快递 醒 人 你 他 她 它 什么 啥 谁 学生 老师 医生 程序员 中国人 用户 一名 一个"
)
# "我是X" names only with a name-like word after it ("我是小王"), never "我是学生".
ZH_IS_NAME = re.compile(r"^(?:小|老|阿)[\u4e00-\u9fff]$|^[A-Za-z]")
# The lead words in any case; the name itself must be capitalised ("call me back" is no name).
EN_NAME = re.compile(
    r"(?i:\bmy\s+name\s+is|\bmy\s+name's|\bname's|(?:^\s*|\bplease\s+|\bjust\s+|"
    r"\byou\s+(?:can|may|should)\s+)call\s+me|\bi\s+go\s+by|\bi'm\s+called|\bi\s+am\s+called)\s+"
    r"((?:(?:Dr|Mr|Mrs|Ms|Prof)\.?\s+)?[A-Z][\w'-]*(?:\s+[A-Z][\w'-]*){0,2})",
)
EN_NOT_NAME = words(
    "back later tomorrow today tonight now when if at on in after before soon again anytime "
    "maybe please sometime"
)


# "能不能 / 可不可以" hold a 不 but ask for something rather than refuse it.
ZH_ASKING = re.compile(r"能不能|可不可以|要不要|行不行")
