"""How remembered facts reach the backend: ``context.profile`` (and a home that stands in for a
place the query needs but nobody said) on the tasks adapter, one short system note on chat APIs."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

_HAN = re.compile(r"[\u4e00-\u9fff]")

_LANGUAGE_NAMES = {
    "zh": ("中文", "Chinese"),
    "en": ("英文", "English"),
    "ja": ("日语", "Japanese"),
    "ko": ("韩语", "Korean"),
    "fr": ("法语", "French"),
    "de": ("德语", "German"),
    "es": ("西班牙语", "Spanish"),
}
_UNITS = {
    "metric": ("公制（摄氏度、公里）", "metric (°C, km)"),
    "imperial": ("英制（华氏度、英里）", "imperial (°F, miles)"),
}


def home_for(context: Mapping[str, Any], facts: Mapping[str, str]) -> str | None:
    """The profile's home when the turn needs a place and none was said (in the session, the
    query or the request), else None."""
    home = facts.get("home_location")
    if not home or context.get("location") or not context.get("topic"):
        return None
    return home


def with_profile(context: dict[str, Any], facts: Mapping[str, str]) -> dict[str, Any]:
    """The context to forward: the facts under ``profile``, and the home as ``location`` when the
    query needs a place that was not said."""
    if not facts:
        return context
    out = {**context, "profile": dict(facts)}
    home = home_for(context, facts)
    if home is not None:
        out["location"] = home
    return out


def profile_note(facts: Mapping[str, str], query: str) -> str | None:
    """One short sentence stating the facts, in the user's language (their stated one, else the
    language of their message)."""
    if not facts:
        return None
    language = facts.get("language") or ("zh" if _HAN.search(query) else "en")
    zh = language == "zh"
    parts: list[str] = []
    if name := facts.get("name"):
        parts.append(f"称呼用户为{name}" if zh else f"call the user {name}")
    if home := facts.get("home_location"):
        parts.append(
            f"用户住在或正在{home}" if zh else f"the user lives in or is staying in {home}"
        )
    if units := _UNITS.get(facts.get("units", "")):
        parts.append(f"单位用{units[0]}" if zh else f"use {units[1]} units")
    if names := _LANGUAGE_NAMES.get(facts.get("language", "")):
        parts.append(f"请用{names[0]}回答" if zh else f"answer in {names[1]}")
    if not parts:
        return None
    if zh:
        return "关于用户（来自此前的对话）：" + "；".join(parts) + "。"
    return "About the user (from earlier conversations): " + "; ".join(parts) + "."
