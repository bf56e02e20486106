"""`segexp export`: a checkpoint in a format other tools serve (ONNX, TensorFlow SavedModel, LiteRT), written
by Keras' own `Model.export` and checked: the exported model predicts a real slice and the largest absolute
difference from Keras is printed (and must be within `tolerance`).

ONNX needs the `export` extra (tf2onnx, onnx, onnxruntime): `pip install -e ".[export]"`. LiteRT models
have a fixed input size (`size=[h,w]`, default the run's training crop): its built-in operators need
static shapes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
from omegaconf import DictConfig

from segexp.errors import ConfigError

KERAS_FORMAT = {"onnx": "onnx", "saved_model": "tf_saved_model", "litert": "litert"}
EXTRA = 'pip install -e ".[export]"'


def require(module: str, what: str) -> None:
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise ConfigError(f"{what} needs the {module} package, which is not installed; {EXTRA}")


def exported_runner(fmt: str, path: Path) -> Callable[[np.ndarray], np.ndarray]:
    """Returns batch -> output of the exported model, run by the runtime that serves that format."""
    if fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        return lambda batch: session.run(None, {name: batch})[0]
    if fmt == "saved_model":
        import tensorflow as tf

        served = tf.saved_model.load(str(path))
        return lambda batch: served.serve(batch).numpy()
    try:  # LiteRT's own interpreter where installed, else TensorFlow's copy of it
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        import warnings

        import tensorflow as tf

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tf.lite.Interpreter's deprecation notice: we said where LiteRT is
            Interpreter = tf.lite.Interpreter  # noqa: N806

    interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    source, target = interpreter.get_input_details()[0]["index"], interpreter.get_output_details()[0]["index"]

    def run(batch: np.ndarray) -> np.ndarray:
        interpreter.set_tensor(source, batch)
        interpreter.invoke()
        return interpreter.get_tensor(target)
    return run


def parity_slice(run, channels: int, size) -> tuple[np.ndarray, str]:
    """Returns (a batch of one real slice - the run's first report slice, else its first slice - cut to
    `size` if given, a description)."""
    from segexp.data.images import to_channels
    from segexp.evaluation.slices import report_set

    data = report_set(run) if run is not None and run.read_split() else None
    if data is None or not data.images:
        raise ConfigError("export: no run folder beside the checkpoint to take a real slice from; pass the run "
                          "directory (or its MLflow run id) as ckpt=")
    image = to_channels(data.images[0], channels)
    if size:
        h, w = size
        if image.shape[0] < h or image.shape[1] < w:
            raise ConfigError(f"size={list(size)} is larger than the slice {data.names[0]} {image.shape[:2]}")
        image = image[:h, :w]
    return np.ascontiguousarray(image[None], np.float32), f"slice {data.names[0]} ({image.shape[0]}x{image.shape[1]})"


def largest_difference(outputs: list[np.ndarray], expected: list[np.ndarray], what: str, where: str) -> float:
    """Returns the largest absolute difference between `outputs` and Keras' `expected`, over every pixel and every
    output channel (all K class probabilities of a K-class model); ConfigError when a shape differs."""
    for got, want in zip(outputs, expected):
        if got.shape != want.shape:
            raise ConfigError(f"export: {what} returns shape {list(got.shape)} where Keras returns {list(want.shape)} "
                              f"on {where}")
    return max(float(np.abs(got - want).max()) for got, want in zip(outputs, expected))


def export(cfg: DictConfig) -> float:
    """Exports the checkpoint, checks it on a real slice; returns the largest absolute difference from Keras."""
    import keras

    from segexp.models.loading import load_model
    from segexp.tracking.references import resolve_checkpoint

    fmt = str(cfg.format)
    if fmt not in KERAS_FORMAT:
        raise ConfigError(f"format={fmt}: choose one of {', '.join(KERAS_FORMAT)}")
    if fmt == "onnx":
        require("tf2onnx", "format=onnx")
        require("onnxruntime", "the ONNX parity check")
    checkpoint, run = resolve_checkpoint(cfg.ckpt)
    size = list(cfg.size) if cfg.size is not None else None
    if fmt == "litert" and size is None:
        crop = run.saved_config().trainer.crop_size if run is not None and run.saved_config() else None
        if crop is None:
            raise ConfigError("format=litert needs a fixed input size: set size=[height,width]")
        size = [crop, crop]
    model = load_model(checkpoint)
    channels = int(model.input_shape[-1])
    batch, where = parity_slice(run, channels, size)
    output = Path(cfg.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    signature = [keras.InputSpec(shape=(1, *size, channels), dtype="float32")] if size else None
    # a dynamic-size model is also checked one pixel short of the slice in each direction: an odd size
    # exercises the padding to the U-Net's multiple, where exporters have differed from Keras
    batches = [batch] if size else [batch, np.ascontiguousarray(batch[:, :-1, :-1])]
    expected = [np.asarray(model.predict_on_batch(b)) for b in batches]  # also builds the model, as ONNX needs
    model.export(str(output), format=KERAS_FORMAT[fmt], verbose=False, input_signature=signature)
    runner = exported_runner(fmt, output)
    outputs = [np.asarray(runner(b)) for b in batches]
    if not size:
        where += f" and its {batch.shape[1] - 1}x{batch.shape[2] - 1} crop"
    difference = largest_difference(outputs, expected, f"the {fmt} model", where)
    shape = f"{size[0]}x{size[1]}" if size else "any size"
    channels_out = expected[0].shape[-1]
    print(f"[segexp] exported {checkpoint} as {fmt} ({shape}) to {output}; on {where} the largest absolute "
          f"difference from Keras over its {channels_out} output channel{'s' if channels_out > 1 else ''} is "
          f"{difference:.2e} (tolerance {cfg.tolerance:g})", flush=True)
    if not difference <= cfg.tolerance:
        raise ConfigError(f"export: the {fmt} model differs from Keras by {difference:.2e} on {where}, more than "
                          f"tolerance={cfg.tolerance:g}; the file is kept at {output} for inspection")
    return difference
