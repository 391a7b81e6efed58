"""How paired figures are judged: the median pair, its confidence interval, and the table."""

from __future__ import annotations

from benchmarks._harness import Goal, Paired, Row, paired_rounds, render_markdown


def test_the_ratio_is_the_median_pairs_own_and_the_row_shows_that_pair() -> None:
    paired = Paired(baseline=(1.0, 2.0, 4.0, 1.0), measured=(1.3, 2.2, 4.0, 1.2))
    assert paired.ratios == [1.3, 1.1, 1.0, 1.2]
    assert paired.median_round == (2.0, 2.2)  # the lower middle of 1.0, 1.1, 1.2, 1.3
    assert paired.ratio == 1.1


def test_pairs_that_all_agree_have_an_interval_of_that_one_ratio() -> None:
    paired = Paired(baseline=(2.0,) * 9, measured=(2.5,) * 9)
    assert paired.ratio_ci95 == (1.25, 1.25)


def test_the_interval_brackets_the_median_is_repeatable_and_narrows_with_more_pairs() -> None:
    ratios = [1.0 + i / 100 for i in range(21)]  # 1.00 ... 1.20, median 1.10
    few = Paired(baseline=(1.0,) * 21, measured=tuple(ratios))
    many = Paired(baseline=(1.0,) * 210, measured=tuple(ratios * 10))
    low, high = few.ratio_ci95
    assert low < few.ratio < high
    # An odd count: every resampled median is one of the pairs' ratios.
    assert low in ratios
    assert high in ratios
    assert few.ratio_ci95 == (low, high)  # seeded
    many_low, many_high = many.ratio_ci95
    assert low <= many_low <= 1.10 <= many_high <= high
    assert many_high - many_low < high - low


def test_details_carry_the_interval_and_the_table_shows_it_beside_the_ratio() -> None:
    paired = Paired(baseline=(1.0, 1.0, 1.0), measured=(1.04, 1.05, 1.06))
    details = paired.details()
    assert details["ratio_ci95"] == [1.04, 1.06]
    row = Row(
        figure="4 sync facade",
        measured=1.05,
        unit="s",
        baseline=1.0,
        baseline_label="the same calls awaited",
        ratio=paired.ratio,
        goal=Goal("<=", 1.10),
        details=details,
    )
    table = render_markdown([row], title="t")
    assert "| 1.050 (95% CI 1.040–1.060) | ratio ≤ 1.1 | yes |" in table


def test_paired_rounds_alternate_which_side_goes_first() -> None:
    order: list[str] = []

    def side(name: str) -> float:
        order.append(name)
        return float(len(order))

    pairs = paired_rounds(3, baseline=lambda: side("b"), measured=lambda: side("m"))
    assert order == ["b", "m", "m", "b", "b", "m"]
    assert pairs == [(1.0, 2.0), (4.0, 3.0), (5.0, 6.0)]
