"""`segexp export`: a checkpoint as ONNX, SavedModel or LiteRT, checked against Keras on a real slice."""

from __future__ import annotations


def task(cfg):
    from segexp.native_logs import import_tensorflow

    import_tensorflow()
    from segexp.commands.export import export

    export(cfg)
