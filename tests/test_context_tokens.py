"""The token estimate used to cut the history window to a budget."""

from __future__ import annotations

import pytest

from sidecar.context import estimate_tokens


def test_empty_is_zero_and_non_empty_is_never_zero() -> None:
    assert estimate_tokens("") == 0
    for text in ["a", " ", ".", "你", "\n", "1"]:
        assert estimate_tokens(text) >= 1, repr(text)


def test_cjk_costs_about_one_token_per_character() -> None:
    assert estimate_tokens("今天巴黎的天气") == 7
    assert estimate_tokens("こんにちは") == 5
    assert estimate_tokens("안녕하세요") == 5


def test_english_costs_about_a_token_per_four_characters() -> None:
    assert estimate_tokens("weather") == 2
    assert estimate_tokens("the cat sat") == 3
    text = "The weather in Paris tomorrow will be sunny with a light breeze."
    assert 12 <= estimate_tokens(text) <= 20


def test_cjk_is_far_denser_than_english() -> None:
    zh = "明天巴黎的天气怎么样"
    en = "what's the weather in Paris tomorrow"
    assert estimate_tokens(zh) / len(zh) > 2 * estimate_tokens(en) / len(en)


def test_punctuation_and_numbers_count() -> None:
    assert estimate_tokens("hi!") == 2
    assert estimate_tokens("123456") == 2
    assert estimate_tokens("你好，世界！") == 6


@pytest.mark.parametrize(
    ("text", "tokens"),
    [
        ("abcdefghi", 3),  # a started four letters is a token
        ("snake_case_name", 4),  # underscores cost nothing: snake, case, name
        ("v2.0", 4),
        ("x1234567", 4),  # a letter, then digits by three
        ("hello,\tworld\x00", 6),  # a control character is a symbol
        ("  \n ", 1),
        ("café 1234", 3),  # not ASCII: the same rules
        ("mix中文abc", 2),  # a Latin word runs on into the characters after it
    ],
)
def test_words_digits_and_symbols_count_as_the_rules_say(text: str, tokens: int) -> None:
    assert estimate_tokens(text) == tokens


@pytest.mark.parametrize("n", [1, 10, 1000])
def test_grows_with_length(n: int) -> None:
    assert estimate_tokens("天" * n) == n
    assert estimate_tokens("word " * n) == n
