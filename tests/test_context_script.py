"""Traditional Chinese matched as Simplified: the conversion skipped for text it cannot change."""

from __future__ import annotations

import subprocess
from pathlib import Path

import opencc
import pytest

from sidecar.context.script import _convertible, to_simplified

# The dictionaries t2s reads (opencc's share/opencc/t2s.json), dumped with the command-line
# tool the opencc wheel ships next to them.
_CLIB = Path(opencc.__file__).parent / "clib"
_T2S_DICTS = ["TSPhrases", "TSCharactersExt", "TSCharacters", "CJK_Compatibility_Ideographs"]


def t2s_entries(tmp: Path) -> dict[str, str]:
    entries: dict[str, str] = {}
    for name in _T2S_DICTS:
        out = tmp / f"{name}.txt"
        subprocess.run(
            [_CLIB / "bin" / "opencc_dict", "-i", _CLIB / "share" / "opencc" / f"{name}.ocd2",
             "-o", out, "-f", "ocd2", "-t", "text"],
            check=True,
        )  # fmt: skip
        for line in out.read_text(encoding="utf-8").splitlines():
            key, _, values = line.partition("\t")
            entries.setdefault(key, values.split(" ")[0])
    return entries


def test_every_text_t2s_would_change_takes_the_conversion(tmp_path: Path) -> None:
    """The skip is safe: each phrase or character the dictionaries convert to something else
    holds a character the skip looks for."""
    entries = t2s_entries(tmp_path)
    convert = opencc.OpenCC("t2s").convert
    changing = [key for key in entries if convert(key) != key]
    assert len(changing) > 5000  # the dictionaries were read
    missed = [key for key in changing if _convertible().search(key) is None]
    assert not missed


@pytest.mark.parametrize(
    ("text", "simple"),
    [
        ("臺北明天天氣如何", "台北明天天气如何"),
        ("深沈", "深沉"),  # a phrase of characters none of which converts alone
        ("他找藉口不來", "他找借口不来"),
        ("明天北京天气怎么样", "明天北京天气怎么样"),
        ("沈阳明天冷吗", "沈阳明天冷吗"),  # 沈 alone is a surname and a city: kept
        ("what about 臺北?", "what about 台北?"),
        ("tell me a joke", "tell me a joke"),
    ],
)
def test_simplified_text_is_what_opencc_gives(text: str, simple: str) -> None:
    assert to_simplified(text) == simple == opencc.OpenCC("t2s").convert(text)
