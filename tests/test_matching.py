"""Answer matching against the real 102 Flowers102 names: a hand-written table of tricky answers, strict and lenient."""

from __future__ import annotations

import subprocess
import sys

import pytest

import fgvlm
from fgvlm.data.flowers102 import Flowers102
from fgvlm.eval.matching import AnswerMatcher, match_answer, match_yes_no, normalize, option_key
from fgvlm.registry import resource_json

NAMES = resource_json("flowers102_classes.json")
ALIASES = Flowers102(root="/nonexistent").aliases  # naming data only; no files are read
L = {name: label for label, name in enumerate(NAMES)}

# (answer, strict expectation, lenient expectation): class names, or None for "no class / ambiguous".
CASES = [
    ("lotus", "lotus lotus", "lotus lotus"),
    ("Lotus lotus", "lotus lotus", "lotus lotus"),
    ("It's a gerbera", None, "barbeton daisy"),
    ("a rose and a lily", None, None),
    ("rose", "rose", "rose"),
    ("Roses.", "rose", "rose"),
    ("This is a pink primrose.", "pink primrose", "pink primrose"),
    ("primrose", None, "primula"),
    ("an evening primrose", None, "pink primrose"),
    ("Lenten Roses", "lenten rose", "lenten rose"),
    ("desert-rose", "desert-rose", "desert-rose"),
    ("a desert rose", "desert-rose", "desert-rose"),
    ("a desert rose, not a rose", None, None),
    ("mexican petunia", "mexican petunia", "mexican petunia"),
    ("Petunias", "petunia", "petunia"),
    ("A Tree-Mallow.", "tree mallow", "tree mallow"),
    ("mallow", "mallow", "mallow"),
    ("barbeton daisey", None, "barbeton daisy"),
    ("Barberton daisy", None, "barbeton daisy"),
    ("colt's foot", "colt's foot", "colt's foot"),
    ("colts foot", "colt's foot", "colt's foot"),
    ("coltsfoot", None, "colt's foot"),
    ("CANTERBURY BELL", "canterbury bells", "canterbury bells"),
    ("Hard leaved pocket orchid", "hard-leaved pocket orchid", "hard-leaved pocket orchid"),
    ("an orchid", None, None),
    ("It is a tiger lily or a fire lily", None, None),
    ("This lily is a tiger lily", "tiger lily", "tiger lily"),
    ("water lilies", "water lily", "water lily"),
    ("\uff33\uff55\uff4e\uff46\uff4c\uff4f\uff57\uff45\uff52", "sunflower", "sunflower"),  # full-width (NFKC)
    ("sunflwer", None, "sunflower"),
    ("I don't know.", None, None),
    ("", None, None),
    ("a beautiful purple flower with green leaves", None, None),
    ("It's a bird of paradise flower", "bird of paradise", "bird of paradise"),
    ("Prince of Wales feather", "prince of wales feathers", "prince of wales feathers"),
    ("globe flower", "globe-flower", "globe-flower"),
    ("globe thistle", "globe thistle", "globe thistle"),
    ("it's a calla lily", None, "giant white arum lily"),
    ("A gladiolus", None, "sword lily"),
    ("black eyed susan", "black-eyed susan", "black-eyed susan"),
    ("Pink-yellow dahlia", "pink-yellow dahlia", "pink-yellow dahlia"),
    ("a dahlia", None, None),
    ("anemone", None, "windflower"),
    ("Japanese anemone", "japanese anemone", "japanese anemone"),
    ("English marigold", "english marigold", "english marigold"),
    ("an english marigold or a marigold?", None, None),
    ("a pansy", None, "wild pansy"),
    ("Cam\u00e9lia", None, "camellia"),
    ("Answer: sword lily", "sword lily", "sword lily"),
    ("daisy", None, None),
    ("The flower is a bromeliad", None, "bromelia"),
    ("red ginger", "red ginger", "red ginger"),
]


@pytest.mark.parametrize(("answer", "strict", "lenient"), CASES)
def test_table(answer: str, strict: str | None, lenient: str | None) -> None:
    assert match_answer(answer, NAMES, lenient=False) == (None if strict is None else L[strict])
    assert match_answer(answer, NAMES, ALIASES) == (None if lenient is None else L[lenient])


def test_table_is_big_enough() -> None:
    assert len(CASES) >= 40


OPTIONS = {"A": L["rose"], "B": L["lenten rose"], "C": L["sunflower"], "D": L["water lily"]}


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("B", "lenten rose"),
        ("(B)", "lenten rose"),
        ("B.", "lenten rose"),
        ("Answer: B", "lenten rose"),
        ("The answer is C.", "sunflower"),
        ("b", "lenten rose"),
        ("B. lenten rose", "lenten rose"),
        ("B. sunflower", None),  # the key and the name disagree
        ("B. rose and a lily", None),  # the name after the key is ambiguous: it does not confirm B
        ("D) water lily or sunflower", None),  # two classes after the key
        ("A rose", "rose"),  # an article, not option A
        ("A", "rose"),
        ("D) water lily", "water lily"),
        ("[C]", "sunflower"),
        ("E", None),  # not an option
        ("water lily", "water lily"),  # by name
        ("Option D", "water lily"),
    ],
)
def test_option_keys(answer: str, expected: str | None) -> None:
    for lenient in (False, True):
        got = match_answer(answer, NAMES, ALIASES, lenient=lenient, options=OPTIONS)
        assert got == (None if expected is None else L[expected]), (answer, lenient)


def test_numbered_options_and_key_parsing() -> None:
    options = {"1": L["rose"], "2": L["daffodil"], "10": L["azalea"]}
    assert match_answer("2", NAMES, options=options) == L["daffodil"]
    assert match_answer("Answer: 10.", NAMES, options=options) == L["azalea"]
    assert option_key("AA") == "AA" and option_key("(cx)") == "CX"
    assert option_key("A rose") is None and option_key("Roses are red") is None


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("Yes", True),
        ("yes, it is", True),
        ("YES!", True),
        ("No.", False),
        ("No, it is a rose", False),
        ("It is not", False),
        ("Yes and no", None),
        ("maybe", None),
        ("", None),
        # conservative: only a clear opening decides; a "not" later in the reply is no answer
        ("I am not sure", None),
        ("It is a rose, not a tulip.", None),
        ("Not sure.", None),
        ("I think yes", None),
        ("Not a rose.", False),
        ("Not.", False),
        ("This isn't a tulip.", False),
        ("Nope", False),
        ("Yeah, it is", True),
        ("Correct.", True),
        ("The answer is yes.", True),
        ("Answer: no", False),
    ],
)
def test_yes_no(answer: str, expected: bool | None) -> None:
    assert match_yes_no(answer) is expected


def test_normalisation() -> None:
    assert normalize("Lotus  LOTUS") == "lotus"
    assert normalize("Colt\u2019s-Foot!") == "colt foot"
    assert normalize("irises lilies roses hibiscus crocuses") == "iris lily rose hibiscus crocus"


def test_aliases_keyed_by_name_or_label_and_bad_keys() -> None:
    by_name = {"barbeton daisy": ["gerbera"]}
    assert match_answer("a gerbera", NAMES, by_name) == L["barbeton daisy"]
    assert match_answer("a gerbera", NAMES, {L["barbeton daisy"]: ["gerbera"]}) == L["barbeton daisy"]
    with pytest.raises(KeyError, match="tulip"):
        AnswerMatcher(NAMES, {"tulip": ["tulipa"]})


def test_generic_head_words_come_from_canonical_names() -> None:
    matcher = AnswerMatcher(NAMES, ALIASES)
    assert matcher.generic_words == {"lily", "orchid", "thistle", "iris", "poppy", "daisy", "dahlia"}


def test_public_api_is_lazy() -> None:
    assert fgvlm.match_answer("a rose", NAMES) == L["rose"]
    code = "import sys, fgvlm; fgvlm.match_answer('rose', ['rose']); assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
