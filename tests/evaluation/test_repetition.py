"""The repetition measures on strings whose n-grams are counted by hand in each comment."""
import pytest

from evaluation.repetition import loops, repeated_ngram_rate, repetition_stats

GAVIN6 = " ".join(["Gavin"] * 6)  # three 4-grams, all "gavin gavin gavin gavin"


@pytest.mark.parametrize("text, looping, rate", [
    ("the cat sat on the mat", False, 0.0),  # 3 distinct 4-grams of 3
    (GAVIN6, True, 1 - 1 / 3),  # one 4-gram, 3 times
    (" ".join(["Gavin"] * 5), False, 1 - 1 / 2),  # one 4-gram, twice: repeated, not yet a loop
    ("a b c d a b c d a b c d", True, 1 - 4 / 9),  # "a b c d" 3 times; 4 distinct of 9
    ("The end. the END, the end; THE END", True, 1 - 2 / 5),  # case and punctuation ignored: "the end the end" 3x
    ("hi there", False, 0.0),  # no 4-gram at all
])
def test_loops_and_repeated_ngram_rate(text, looping, rate):
    assert loops(text) is looping
    assert repeated_ngram_rate(text) == pytest.approx(rate)


def test_stats_count_the_loops_and_average_the_rate_over_summaries_with_an_ngram():
    stats = repetition_stats(["the cat sat on the mat", GAVIN6, "hi there"])
    assert stats["looping"] == 1 and stats["loop_share"] == round(1 / 3, 4)
    assert stats["repeated_ngram_rate"] == round((0 + 2 / 3) / 2, 4)  # "hi there" has no 4-gram: not averaged
    assert repetition_stats([])["loop_share"] is None
