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
