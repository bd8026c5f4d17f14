"""Edit distance and G2P error rates against hand-computed values."""

from __future__ import annotations

import pytest

from seqformer.metrics import edit_distance, error_rates, exact_match


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ("", "", 0),
        ("abc", "", 3),
        ("", "abc", 3),
        ("kitten", "sitting", 3),  # k->s, e->i, +g
        ("flaw", "lawn", 2),  # -f, +n
        ("intention", "execution", 5),
        ("abc", "abc", 0),
        ("abcdef", "azcdxf", 2),  # two substitutions between a shared prefix and suffix
        ("ab", "ba", 2),  # no transpositions in Levenshtein
        (["TH", "R", "UW1"], ["TH", "R", "UW0"], 1),
        (["TH", "R", "UW1"], ["TH", "UW1"], 1),
        ((1, 2, 3, 4), (4, 3, 2, 1), 4),
    ],
)
def test_edit_distance(a, b, expected: int) -> None:
    assert edit_distance(a, b) == expected
    assert edit_distance(b, a) == expected


def test_error_rates_use_closest_reference() -> None:
    hyps = ["TH R UW1", "R IY1 D", "HH AH0 L OW1"]
    refs = [
        ("TH R UW1",),  # exact: 0 errors / 3
        ("R EH1 D", "R IY1 D"),  # matches the second reference: 0 / 3
        ("HH EH0 L OW1", "HH AH0 L OW1 W"),  # both at distance 1 -> tie goes to the 4-phone ref
    ]
    rates = error_rates(hyps, refs)
    assert rates["n"] == 3
    assert rates["per"] == pytest.approx(100.0 * 1 / 10)
    assert rates["wer"] == pytest.approx(100.0 / 3)


def test_error_rates_count_insertions_against_short_reference() -> None:
    rates = error_rates(["AH B K D"], [("AH B",)])
    assert rates == {"per": 100.0, "wer": 100.0, "n": 1}


def test_exact_match_ignores_spacing_and_accepts_a_bare_string() -> None:
    assert exact_match(["TH  R UW1", "R IY1 D"], ["TH R UW1", ("R EH1 D",)]) == 50.0
    assert exact_match(["a b"], [("x", "a b")]) == 100.0


def test_mismatched_or_empty_inputs_are_rejected() -> None:
    with pytest.raises(ValueError):
        error_rates(["A"], [("A",), ("B",)])
    with pytest.raises(ValueError):
        error_rates(["A"], [()])
    with pytest.raises(ValueError):
        exact_match([], [])


def test_character_error_rate_uses_the_closest_reference() -> None:
    from seqformer.metrics import char_error_rate

    assert char_error_rate(["kitten"], ["sitting"]) == 100.0 * 3 / 7
    # Closest of several references; whitespace runs are one space.
    assert char_error_rate(["a  b", "xyz"], [("a b", "q"), ("xyz",)]) == 0.0
    assert char_error_rate(["ab", "abcd"], [("abc",), ("abcd", "zzzz")]) == 100.0 * 1 / 7
    with pytest.raises(ValueError):
        char_error_rate(["a"], [""])
