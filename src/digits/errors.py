"""Errors a user can act on: each message names the file, the row or column, and the fix."""


class DigitsError(Exception):
    """Base class for every error this project raises on purpose."""


class IngestError(DigitsError):
    """The source CSV cannot be read."""


class DataValidationError(DigitsError):
    """The data is not in Kaggle's Digit Recognizer format, or too many rows are unusable."""


class RegistrationError(DigitsError):
    """The model could not be logged or registered in MLflow."""


class DockerRunError(DigitsError):
    """`digits run --runner docker` cannot start: no Docker daemon, or an image is not built."""
