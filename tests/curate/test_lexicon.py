"""Title matching against ImageNet class names and WordNet synonyms."""

from __future__ import annotations

import pytest

from vito.curate.lexicon import Lexicon, imagenet_lexicon, normalize_words, singular_forms


@pytest.fixture(scope="module")
def lexicon() -> Lexicon:
    return imagenet_lexicon()


def names(lexicon: Lexicon, title: str) -> list[str]:
    return [lexicon.name(c) for c in lexicon.classes_in(title)]


def test_lexicon_holds_the_1000_imagenet_classes_with_synonyms(lexicon):
    assert len(lexicon) == 1000
    assert lexicon.class_names[0] == ["tench", "Tinca tinca"]
    assert lexicon.class_names[504] == ["coffee mug"]
    assert "tabby cat" in lexicon.class_names[281]


@pytest.mark.parametrize(
    "title, expected",
    [
        ("A Tabby at the window", ["tabby"]),  # first lemma, case-insensitive
        ("my tabby cat sleeping", ["tabby"]),  # a synonym, and the maximal phrase wins once
        ("Estate car review", ["beach wagon"]),  # multi-word synonym
        ("Husky puppies in the snow", ["Eskimo dog"]),  # synonym
        ("WHITE SULPHUR CRESTED COCKATOO!!", ["sulphur-crested cockatoo"]),  # hyphen vs space, punctuation
        ("sulphur-crested cockatoo", ["sulphur-crested cockatoo"]),
        ("jack o lanterns for halloween", ["jack-o'-lantern"]),  # apostrophe + plural
        ("Yellow lady's-slipper in bloom", ["yellow lady's slipper"]),
        ("Consommé au naturel", ["consomme"]),  # accents fold away
    ],
)
def test_synonyms_phrases_case_and_punctuation(lexicon, title, expected):
    assert names(lexicon, title) == expected


@pytest.mark.parametrize(
    "title, expected",
    [
        ("three soccer balls", ["soccer ball"]),  # -s
        ("two coffee mugs", ["coffee mug"]),
        ("two ostriches", ["ostrich"]),  # -es
        ("grey wolves hunting", ["timber wolf"]),  # -ves -> -f
        ("hot dogs on the grill", ["hotdog"]),  # plural on the last word of a phrase
        ("a dozen red cups", ["cup"]),
    ],
)
def test_simple_plurals(lexicon, title, expected):
    assert names(lexicon, title) == expected


@pytest.mark.parametrize("title", ["my category of videos", "concatenate clips", "cathedral tour", "scatter plot"])
def test_whole_words_only(lexicon, title):
    """"cat" (in "tiger cat" etc.) and "tabby" never match inside longer words."""
    assert lexicon.classes_in(title) == []


@pytest.mark.parametrize("title", ["Dames at the ball", "The Hayes family", "pines and cones"])
def test_es_is_not_stripped_where_english_adds_only_s(lexicon, title):
    """"dames" is not a plural of *dam* (nor "Hayes" of *hay*): -es is only stripped after s/x/z/ch/sh/o."""
    assert lexicon.classes_in(title) == []


def test_word_boundaries_with_a_toy_lexicon():
    toy = Lexicon([["cat"], ["category"], ["hot pot"], ["pot"], ["crane"], ["crane"]])
    assert toy.classes_in("Cat") == [0]
    assert toy.classes_in("category") == [1]
    assert toy.classes_in("categories") == [1]  # -ies -> -y
    assert toy.classes_in("cats, cats!") == [0]
    assert toy.classes_in("concatenation") == []
    assert toy.classes_in("hot pot with a pot") == [2, 3]  # "pot" inside "hot pot" is not a separate match
    assert toy.classes_in("a crane") == [4, 5]  # one phrase shared by two classes names both


def test_several_classes_are_all_reported(lexicon):
    assert names(lexicon, "tabby cat chasing a soccer ball") == ["tabby", "soccer ball"]


def test_normal_form_helpers():
    assert normalize_words("  Sulphur-Crested, COCKATOO's!  ") == ("sulphur", "crested", "cockatoos")
    assert singular_forms("puppies") >= {"puppy"}
    assert singular_forms("wolves") >= {"wolf"}
    assert singular_forms("glass") == {"glass"}
    assert singular_forms("boxes") >= {"box"} and "dam" not in singular_forms("dames")
    assert normalize_words("Crème BRÛLÉE") == ("creme", "brulee")
