"""StablePrefix: the words of a live caption that do not flicker.

A batch model re-decoding a growing utterance changes its mind about the last words.
A word is shown only once two consecutive decodes agree on it and on everything before
it (local agreement); once shown, it stays.  A decode that disagrees with what is shown
adds nothing until the decodes agree again.  Words compare without case and
punctuation ("Hello," and "hello" agree); a newly shown word is spelt as the latest
decode spells it.  Pure.
"""

from __future__ import annotations

import re

__all__ = ["StablePrefix", "normalize"]

_PUNCTUATION = re.compile(r"[^\w']+")


def normalize(word: str) -> str:
    return _PUNCTUATION.sub("", word.lower())


class StablePrefix:
    """Feed each decode of one utterance to ``update``; it returns the caption when
    it grew, else None."""

    def __init__(self) -> None:
        self.shown: list[str] = []
        self._previous: list[str] | None = None

    def update(self, text: str) -> str | None:
        words = text.split()
        previous, self._previous = self._previous, words
        if previous is None:
            return None
        agreed = 0
        for before, now in zip(previous, words):
            if normalize(before) != normalize(now):
                break
            agreed += 1
        shown = len(self.shown)
        if agreed <= shown:
            return None
        if [normalize(w) for w in words[:shown]] != [normalize(w) for w in self.shown]:
            return None
        self.shown += words[shown:agreed]
        return " ".join(self.shown)
