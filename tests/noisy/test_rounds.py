"""Tests of the per-round plot data of the noisy-student stage."""

from retailnb.noisy.rounds import plot_rows
from retailnb.results.records import RoundRecord


def test_plot_rows_give_every_row_of_a_file_the_same_fields() -> None:
    rows = [
        RoundRecord(round=0, probe_accuracy=0.2, knn_accuracy=0.1, probe_c=1.0),
        RoundRecord(round=1, probe_accuracy=0.3, knn_accuracy=0.2, probe_c=0.1, precision=0.5, coverage=0.4),
    ]
    accuracy, quality = plot_rows(rows)
    assert accuracy == [{"round": 0, "probe_accuracy": 0.2, "knn_accuracy": 0.1},
                        {"round": 1, "probe_accuracy": 0.3, "knn_accuracy": 0.2}]
    assert quality == [{"round": 1, "precision": 0.5, "coverage": 0.4}]
