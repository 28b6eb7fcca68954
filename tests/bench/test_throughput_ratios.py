"""bench/throughput.py's ratio cells: median and range of the per-round ratios."""

from bench._ratios import ratio_cell


def test_ratio_cell_is_median_and_range_of_per_round_ratios():
    # rounds: 10/10, 20/20, 60/30 -> ratios 1, 1, 2 (each taken within its round)
    assert ratio_cell([10.0, 20.0, 60.0], [10.0, 20.0, 30.0]) == "1.00x (1.00-2.00)"
    assert ratio_cell([10.0, 20.0, 60.0], [10.0, 10.0, 10.0]) == "2.00x (1.00-6.00)"  # median
    assert ratio_cell([1.0], None) == "-" and ratio_cell([1.0], []) == "-"
