"""The errors segexp reports to users as one line (the CLI catches SegexpError)."""


class SegexpError(Exception):
    """Base class: the message names the offending file or key and what to do."""

    exit_code = 2


class ConfigError(SegexpError, ValueError):
    """A config value is out of range or inconsistent."""


class DataError(SegexpError, ValueError):
    """The data on disk cannot be used."""


class TrackingError(SegexpError, RuntimeError):
    """The MLflow store or server cannot be used."""


class TrainingDiverged(SegexpError, RuntimeError):
    """The loss became NaN or infinite."""


class TrainingInterrupted(SegexpError):
    """SIGINT or SIGTERM stopped training; a checkpoint was saved to resume from."""

    exit_code = 130
