"""Tests of plain-text table alignment."""

from retailnb.util.tables import aligned


def test_columns_are_padded_to_their_widest_cell() -> None:
    lines = [["name", "p"], ["a", "0.5"], ["longer", "1"]]
    assert aligned(lines).splitlines() == ["name    p", "a       0.5", "longer  1"]
    assert aligned(lines, right=True).splitlines() == ["  name    p", "     a  0.5", "longer    1"]


def test_no_rows_is_an_empty_table() -> None:
    assert aligned([]) == ""
