"""Model builders, and loading saved models with every segexp custom object registered."""

from __future__ import annotations

from pathlib import Path


def load_model(path: Path):
    """Returns the Keras model saved at path; raises DataError naming the file if it cannot be read."""
    from segexp.native_logs import import_tensorflow

    import_tensorflow()  # only now, with the command's inputs checked; its C++ start-up notices hidden
    import keras

    import segexp.models.losses  # noqa: F401
    import segexp.models.metrics  # noqa: F401  (importing registers the classes for deserialization)
    import segexp.models.unet  # noqa: F401
    from segexp.errors import DataError

    try:
        return keras.saving.load_model(path)
    except Exception as err:  # keras raises many types for a broken or foreign file
        raise DataError(f"{path}: cannot be loaded as a Keras model ({type(err).__name__}: {err})") from err
