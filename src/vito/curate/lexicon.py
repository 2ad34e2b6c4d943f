"""ImageNet class names and their WordNet synonyms, and matching them against video titles (paper §3.2).

VideoNet keeps a video for class c when its title "included the category's name or a synonym". The names
come from what timm ships (``timm.data.ImageNetInfo``: the WordNet lemmas of each of the 1000 synsets), so
no separate copy of the class list is needed.

Matching rules, applied identically to lemmas and titles so that both sides meet in one normal form:
- case- and accent-insensitive ("Consommé" == "consomme"); apostrophes are dropped ("lady's" -> "ladys"),
  every other non-alphanumeric character separates words ("sulphur-crested" == "sulphur crested");
- whole words and phrases only: "cat" does not match "category";
- simple English plurals of the last word of a phrase: -s, -es after s/x/z/ch/sh/o, -ies -> -y,
  -ves -> -f / -fe ("soccer balls", "boxes", "puppies", "wolves"); "-es" is not stripped after other letters,
  so "dames" and "Hayes" do not name *dam* and *hay*; irregular plurals (mice, geese) are not handled;
- maximal matches: a match lying strictly inside a longer matched phrase is dropped, so "hot pot" names
  class *hot pot* and not also class *pot* and "coffee mug" does not name a bare "mug";
- a phrase shared by several classes (WordNet has two *crane* and two *maillot* synsets) names all of them,
  and a title naming several classes names each of them (the pipeline decides which one the video keeps).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache

_APOSTROPHES = re.compile(r"['\u2019\u2018`]")
_NON_WORD = re.compile(r"[^0-9a-z]+")
_ES_PLURAL = ("ses", "xes", "zes", "ches", "shes", "oes")  # the endings after which English adds -es


def normalize_words(text: str) -> tuple[str, ...]:
    """Lower-case, accent-free words of ``text`` without punctuation (the one normal form for titles and lemmas)."""
    text = unicodedata.normalize("NFKD", text.lower())
    text = _APOSTROPHES.sub("", "".join(c for c in text if not unicodedata.combining(c)))
    return tuple(word for word in _NON_WORD.split(text) if word)


def singular_forms(word: str) -> set[str]:
    """``word`` and the singulars it may be a simple plural of (a form only counts where it is a lemma, but a
    loose rule would still let "dames" name *dam*, hence -es only after the letters that take it)."""
    forms = {word}
    if len(word) > 3 and word.endswith("ies"):
        forms.add(word[:-3] + "y")
    if len(word) > 3 and word.endswith("ves"):
        forms.update({word[:-3] + "f", word[:-3] + "fe"})
    if len(word) > 3 and word.endswith(_ES_PLURAL):
        forms.add(word[:-2])
    if len(word) > 1 and word.endswith("s") and not word.endswith("ss"):
        forms.add(word[:-1])
    return forms


@dataclass(frozen=True)
class Match:
    """One class named by a title: which class, by which phrase, at which word positions ``[start, stop)``."""

    class_index: int
    phrase: str
    start: int
    stop: int


class Lexicon:
    """Phrase -> ImageNet class indices, with title matching."""

    def __init__(self, class_names: Sequence[Sequence[str]]):
        """``class_names[i]`` lists the names (lemmas) of class ``i``."""
        self.class_names = [list(names) for names in class_names]
        self._phrases: dict[tuple[str, ...], set[int]] = {}
        for index, names in enumerate(self.class_names):
            for name in names:
                words = normalize_words(name)
                if words:
                    self._phrases.setdefault(words, set()).add(index)
        self._longest = max((len(words) for words in self._phrases), default=0)

    def __len__(self) -> int:
        return len(self.class_names)

    def name(self, class_index: int) -> str:
        """The first (most common) lemma of a class."""
        return self.class_names[class_index][0]

    def matches(self, title: str) -> list[Match]:
        """Every maximal phrase of ``title`` that names a class, in title order."""
        words = normalize_words(title)
        found: list[Match] = []
        for start in range(len(words)):
            for stop in range(start + 1, min(len(words), start + self._longest) + 1):
                head, last = words[start : stop - 1], words[stop - 1]
                for form in sorted(singular_forms(last)):
                    for index in sorted(self._phrases.get(head + (form,), ())):
                        found.append(Match(index, " ".join(head + (form,)), start, stop))
        return _maximal(found)

    def classes_in(self, title: str) -> list[int]:
        """Distinct class indices named by ``title``, in order of first mention."""
        return list(dict.fromkeys(match.class_index for match in self.matches(title)))


def _maximal(found: Iterable[Match]) -> list[Match]:
    """Drop matches whose span lies strictly inside another match's span; remove duplicates."""
    found = list(dict.fromkeys(found))
    spans = {(m.start, m.stop) for m in found}

    def inside_longer(m: Match) -> bool:
        return any(a <= m.start and m.stop <= b and (a, b) != (m.start, m.stop) for a, b in spans)

    return sorted((m for m in found if not inside_longer(m)), key=lambda m: (m.start, m.stop, m.class_index))


@lru_cache(maxsize=1)
def imagenet_lexicon() -> Lexicon:
    """The 1000 ImageNet-1k classes (timm's index order) with their WordNet lemmas."""
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    names = [
        [name.strip() for name in info.index_to_description(i).split(",") if name.strip()]
        for i in range(info.num_classes())
    ]
    return Lexicon(names)
