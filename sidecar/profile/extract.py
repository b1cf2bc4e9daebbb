"""What a user says about themselves, by rules: explicit first-person statements, zh and en.

Four facts are taken: ``home_location`` (where the user lives or is staying now), ``units``
(``metric`` or ``imperial``), ``language`` (a short code such as ``zh`` or ``en``) and ``name``
(what to call the user). Only statements count: a question ("do you live in Paris?"), another
person's fact ("my friend lives in Rome"), the past ("I was in Berlin last year"), a negation
or a hypothesis ("if I lived in Oslo") gives nothing. Places are found with the context engine's
gazetteer and its evidence rules, so a home is the same kind of place a query names.

Most messages state nothing about the user; one cheap pattern rules those out before any other
work, which keeps the cost of a turn in the microseconds.
"""

from __future__ import annotations

import re

from ..context.entities import answer_place, find_place
from ..context.gazetteer import Gazetteer, load_gazetteer
from ..frozen import frozen
from . import patterns as p


@frozen
class Statement:
    """One fact the user stated, with the words it came from."""

    fact: str
    value: str
    evidence: str


class ProfileExtractor:
    """Finds the facts a message states about its author; the last statement of a fact wins."""

    def __init__(self, gazetteer: Gazetteer | None = None) -> None:
        self._gazetteer = gazetteer

    @property
    def gazetteer(self) -> Gazetteer:
        if self._gazetteer is None:
            self._gazetteer = load_gazetteer()
        return self._gazetteer

    def extract(self, text: str) -> dict[str, str]:
        """The facts ``text`` states about its author (empty for almost every message)."""
        if not text or p.TRIGGER.search(text) is None:
            return {}
        return {s.fact: s.value for s in self.statements(text)}

    def statements(self, text: str) -> list[Statement]:
        found: list[Statement] = []
        for m in p.CLAUSES.finditer(text):
            clause = m.group(0)
            if not clause.strip():
                continue
            if clause.isascii():
                found += self._english(clause)
            else:
                found += self._chinese(clause)
                if re.search(r"[A-Za-z]{2}", clause):
                    found += self._english(clause)
        return found

    # --- English ----------------------------------------------------------------------------

    def _english(self, clause: str) -> list[Statement]:
        """A sentence, part by part: in "I live in Boston, what's the weather?" only the last
        part is the question."""
        sentence = clause.strip()
        if not sentence or p.EN_PAST.search(sentence):
            return []
        parts = [part for part in sentence.split(",") if part.strip()]
        out: list[Statement] = []
        for i, part in enumerate(parts):
            asks = i == len(parts) - 1 and sentence.endswith("?")
            out += self._english_part(part.strip(), asks)
        return out

    def _english_part(self, text: str, asks: bool) -> list[Statement]:
        request = p.EN_REQUEST.match(text) is not None
        question = asks or p.EN_QUESTION.match(text) is not None
        out: list[Statement] = []
        if not question or request:
            for m in p.EN_UNITS.finditer(text):
                word = next(g for g in m.groups() if g)
                out.append(Statement("units", p.UNITS[" ".join(word.lower().split())], m.group(0)))
            for m in p.EN_LANGUAGE.finditer(text):
                word = next(g for g in m.groups() if g)
                out.append(Statement("language", p.LANGUAGES[word.lower()], m.group(0)))
        if question or p.EN_HYPOTHETICAL.search(text):
            return out
        name = p.EN_NAME.search(text)
        if name is not None:
            value = name.group(1).strip()
            if value.split()[0].lower() not in p.EN_NOT_NAME:
                out.append(Statement("name", value, name.group(0)))
        place = self._english_place(text)
        if place is not None:
            out.append(place)
        return out

    def _english_place(self, text: str) -> Statement | None:
        for pattern in (p.EN_LOCATION, p.EN_LOCATION_SIMPLE):
            for m in pattern.finditer(text):
                rest = text[m.end() :]
                plain_in = p.EN_PLAIN_IN.search(m.group(0)) is not None
                found = find_place(rest, self.gazetteer, [], answering=not plain_in)
                if found is not None and found.start <= 1:
                    return Statement("home_location", found.text, m.group(0) + found.text)
                if plain_in:
                    continue  # "I'm in a meeting": only a known place makes it a stay
                unlisted = answer_place(rest, [])
                if (
                    unlisted is not None
                    and unlisted.start <= 1
                    and unlisted.text[:1].isupper()
                    and all(w[:1].isupper() for w in unlisted.text.split())
                ):
                    return Statement("home_location", unlisted.text, m.group(0) + unlisted.text)
        return None

    # --- Chinese ----------------------------------------------------------------------------

    def _chinese(self, clause: str) -> list[Statement]:
        text = clause.strip()
        if p.ZH_PAST.search(text):
            return []
        question = p.ZH_QUESTION.search(text) is not None
        request = p.ZH_REQUEST.match(text) is not None
        out: list[Statement] = []
        for part in p.ZH_SUBCLAUSES.finditer(text):
            sub = part.group(0).strip()
            if not sub:
                continue
            if not question or request:
                for m in p.ZH_UNITS.finditer(sub):
                    if not _negated(sub, m.start(1)):
                        out.append(Statement("units", p.UNITS[m.group(1)], m.group(0)))
                for m in p.ZH_LANGUAGE.finditer(sub):
                    if not _negated(sub, m.start(1)):
                        out.append(Statement("language", p.LANGUAGES[m.group(1)], m.group(0)))
            if question or p.ZH_HYPOTHETICAL.search(sub):
                continue
            name = self._chinese_name(sub)
            if name is not None:
                out.append(name)
            place = self._chinese_place(sub)
            if place is not None:
                out.append(place)
        return out

    def _chinese_name(self, sub: str) -> Statement | None:
        m = p.ZH_NAME.search(sub)
        if m is None:
            return None
        value = m.group(1).strip()
        if value in p.ZH_NOT_NAME or p.ZH_NEGATION.search(sub[: m.start()]):
            return None
        if m.group(0).startswith("我是") and not p.ZH_IS_NAME.search(value):
            return None
        return Statement("name", value, m.group(0))

    def _chinese_place(self, sub: str) -> Statement | None:
        for m in p.ZH_LOCATION.finditer(sub):
            rest = sub[m.end() :]
            found = find_place(rest, self.gazetteer, [], answering=True)
            if found is None or found.start != 0:
                continue
            after = rest[found.end :]
            if p.ZH_NOT_PLACE_AFTER.match(after):
                continue
            if not m.group(0).startswith("我") and not p.ZH_BARE_END.match(after):
                continue  # "住在上海的人很多" is about people, not the user

            return Statement("home_location", found.text, m.group(0) + found.text)
        return None


def _negated(text: str, start: int) -> bool:
    """A 不/没/别 shortly before the fact's word: "不要用华氏度"."""
    window = p.ZH_ASKING.sub("", text[max(0, start - 5) : start])
    return p.ZH_NEGATION.search(window) is not None
