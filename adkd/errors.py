"""Errors that reach the user as one clear line (exit code 2) instead of a traceback."""


class AdkdError(Exception):
    """A user-facing error: bad input, bad data, missing weights, unreachable service.

    The message names the thing that is wrong and how to fix it.
    """

    exit_code = 2


class ConfigError(AdkdError):
    """A setting has a bad value."""


class DataError(AdkdError):
    """A data set is missing, malformed or fails validation."""


class WeightsError(AdkdError):
    """Pretrained weights cannot be found or loaded."""


class ServiceError(AdkdError):
    """A service (MLflow, Ray, S3) cannot be reached or refused a request."""


def parse_error_line(exc: Exception) -> str:
    """A YAML, JSON or TOML parser's complaint in one line, with its place (YAML's own message spans several)."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None)
    if mark is not None and problem:  # PyYAML: "<problem> at line L, column C"
        return f"{problem} at line {mark.line + 1}, column {mark.column + 1}"
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def first_line(exc: BaseException) -> str:
    """The first non-blank line of ``exc``'s message (its type's name when it has none): libraries' messages often
    run to a page."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__
