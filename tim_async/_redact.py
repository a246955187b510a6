"""Removing UserSigs from text the SDK shows (exception messages, body excerpts, log records).

A UserSig can come back inside an answer in many shapes: the request URL echoed by a proxy
(``usersig=...``), a JSON field (``"usersig": "..."``), URL-encoded or not, and cut anywhere by
an excerpt limit or a chunk boundary. So :class:`Redactor` removes the ``usersig`` query value and
*every run of at least* :data:`MIN_FRAGMENT` *characters* that also occurs in a UserSig it was
told about (raw or URL-encoded): a whole echo, its first 121 characters, or its tail. A UserSig is
base64 of compressed data, so an 8-character run of one does not occur in ordinary text by chance.
"""

from __future__ import annotations

import collections
import re
from collections.abc import Iterable
from typing import Final
from urllib.parse import quote

__all__ = ["MIN_FRAGMENT", "REDACTED", "Redactor"]

#: The shortest run of a UserSig's characters that is removed wherever it appears.
MIN_FRAGMENT: Final = 8
REDACTED: Final = "<redacted>"
_USERSIG_RE: Final = re.compile(r"(usersig=)[^&\s'\"]+", re.IGNORECASE)


def _grams(sig: str) -> frozenset[str]:
    n = MIN_FRAGMENT
    grams: set[str] = set()
    for form in {sig, quote(sig, safe="")}:
        grams.update(form[i : i + n] for i in range(len(form) - n + 1))
        if 0 < len(form) < n:
            grams.add(form)  # too short for fragments: only whole matches are removed
    return frozenset(grams)


class Redactor:
    """Remembers the last ``keep`` UserSigs it was shown, and redacts them (and any UserSig
    passed to :meth:`redact`) from text."""

    __slots__ = ("_all", "_grams", "_has_short", "_keep", "longest")

    def __init__(self, keep: int = 16) -> None:
        self._keep = keep
        self._grams: collections.OrderedDict[str, frozenset[str]] = collections.OrderedDict()
        self._all: frozenset[str] = frozenset()  # the union of the remembered ones
        self._has_short = False  # a remembered UserSig shorter than a fragment (whole matches)
        #: Length of the longest form (raw or URL-encoded) of a UserSig seen, in characters.
        self.longest = 0

    def remember(self, sig: str) -> None:
        """Add ``sig`` to the UserSigs redacted from every text (the oldest one drops out)."""
        grams = self._grams
        if sig in grams:
            grams.move_to_end(sig)
            return
        grams[sig] = _grams(sig)
        self.longest = max(self.longest, len(quote(sig, safe="")))
        while len(grams) > self._keep:
            grams.popitem(last=False)
        self._all = frozenset().union(*grams.values())
        self._has_short = any(len(gram) < MIN_FRAGMENT for gram in self._all)

    def redact(self, text: str, sigs: Iterable[str] = ()) -> str:
        """``text`` without the ``usersig`` query value and without any run of at least
        :data:`MIN_FRAGMENT` characters of a remembered UserSig or of one in ``sigs``."""
        text = _USERSIG_RE.sub(r"\1" + REDACTED, text)
        known = self._grams
        extra = [s for s in sigs if s and s not in known]
        if (
            len(text) < MIN_FRAGMENT
            and not self._has_short
            and not any(len(s) < MIN_FRAGMENT for s in extra)
        ):
            return text
        grams = self._all.union(*(_grams(s) for s in extra)) if extra else self._all
        return _cut_out(text, grams) if grams else text


def _cut_out(text: str, grams: frozenset[str]) -> str:
    """Replace every maximal run of ``text`` covered by windows found in ``grams``."""
    n = MIN_FRAGMENT
    spans: list[list[int]] = []
    for i in range(len(text) - n + 1):
        if text[i : i + n] in grams:
            if spans and i <= spans[-1][1]:
                spans[-1][1] = i + n
            else:
                spans.append([i, i + n])
    shorts = [g for g in grams if len(g) < n]
    for short in shorts:  # whole UserSigs shorter than a fragment
        start = text.find(short)
        while start >= 0:
            spans.append([start, start + len(short)])
            start = text.find(short, start + 1)
    if not spans:
        return text
    spans.sort()
    out: list[str] = []
    pos = 0
    for start, end in spans:
        if start < pos:  # overlaps the previous run
            if end > pos:
                pos = end
            continue
        out.append(text[pos:start])
        out.append(REDACTED)
        pos = end
    out.append(text[pos:])
    return "".join(out)
