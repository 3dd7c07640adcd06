"""Helpers the library defines once and several modules share."""

from cifar_resnet.errors import describe_error, first_line


def test_errors_are_described_in_one_line_even_without_a_message():
    assert first_line(RuntimeError("")) == "RuntimeError"
    assert first_line(ValueError("  first\nsecond")) == "first"
    assert describe_error(RuntimeError("\n")) == "RuntimeError"
    assert describe_error(KeyError("weight")) == "KeyError: 'weight'"
