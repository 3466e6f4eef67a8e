"""Errors a user can act on: each message names the file, the row or column, and the fix."""


class DigitsError(Exception):
    """Base class for every error this project raises on purpose."""


class IngestError(DigitsError):
    """The source CSV cannot be read."""


class DataValidationError(DigitsError):
    """The data is not in Kaggle's Digit Recognizer format, or too many rows are unusable."""


class RegistrationError(DigitsError):
    """The model could not be logged or registered in MLflow."""


class SourceNotFoundError(IngestError):
    """The source path or URL does not exist or cannot be reached."""


class NotACsvError(IngestError):
    """The source is empty, binary, wrongly delimited or not a single CSV."""


class ColumnError(DataValidationError):
    """The header does not name Kaggle's columns: missing, duplicated or surplus ones."""


class NoDataRowsError(DataValidationError):
    """The file holds a header but no data rows."""


class TooManyRejectedRowsError(DataValidationError):
    """More rows were rejected than ``max_rejected_fraction`` allows."""


class MissingDigitsError(DataValidationError):
    """Training data lacks every example of one or more digits."""
