"""The one-line forms of library errors that adkd's messages quote."""

from __future__ import annotations

import pytest
import yaml

from adkd.errors import first_line, parse_error_line


def test_first_line_skips_blank_lines_and_names_a_silent_error() -> None:
    assert first_line(RuntimeError("\n  Exception from node.cpp:\nunsupported layer\n")) == "Exception from node.cpp:"
    # "".splitlines()[0], which several messages used, raised IndexError on an error with no message.
    assert first_line(ConnectionError()) == "ConnectionError"


def test_a_yaml_error_is_one_line_with_its_place() -> None:
    with pytest.raises(yaml.YAMLError) as err:
        yaml.safe_load("a: [1,\n")
    assert parse_error_line(err.value) == "expected the node content, but found '<stream end>' at line 2, column 1"
