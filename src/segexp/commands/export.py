"""`segexp export`: a checkpoint in a format other tools serve (ONNX, TensorFlow SavedModel, LiteRT), written
by Keras' own `Model.export` and checked: the exported model predicts a real slice and the largest absolute
difference from Keras is printed (and must be within `tolerance`). `format=bioimageio` writes a bioimage.io model
package instead (inference.bioimageio_package), checked by bioimageio.core's own test of each weight format.

ONNX needs the `export` extra (tf2onnx, onnx, onnxruntime): `pip install -e ".[export]"`. LiteRT models
have a fixed input size (`size=[h,w]`, default the run's training crop): its built-in operators need
static shapes.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

import numpy as np
from omegaconf import DictConfig

from segexp.checks import check_bioimageio_run, check_config
from segexp.errors import ConfigError

if TYPE_CHECKING:
    from segexp.inference.bioimageio_package import FormatCheck, PackageContent

KERAS_FORMAT = {"onnx": "onnx", "saved_model": "tf_saved_model", "litert": "litert"}
BIOIMAGEIO = "bioimageio"
EXTRA = 'pip install -e ".[export]"'
BIOIMAGEIO_EXTRA = 'pip install -e ".[export,bioimageio]"'


@contextlib.contextmanager
def environment_kept() -> Iterator[None]:
    """Puts os.environ back as it was. The exporters write into it - tf2onnx TF_CPP_MIN_LOG_LEVEL=3, bioimageio.core's
    test TF_ENABLE_ONEDNN_OPTS=0 - and every process this one starts afterwards (a test's, a script's) would inherit
    them, logging and computing otherwise."""
    saved = dict(os.environ)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def require(module: str, what: str, extra: str = EXTRA) -> None:
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise ConfigError(f"{what} needs the {module} package, which is not installed; {extra}")


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


def export(cfg: DictConfig):
    """Exports the checkpoint, checks it on a real slice; returns the largest absolute difference from Keras
    (format=bioimageio: bioimageio.core's check of each weight format, a list of FormatCheck)."""
    import keras

    from segexp.models.loading import load_model
    from segexp.tracking.references import resolve_checkpoint

    check_config("export", cfg)
    fmt = str(cfg.format)
    if fmt == BIOIMAGEIO:
        return export_bioimageio(cfg)
    if fmt not in KERAS_FORMAT:
        raise ConfigError(f"format={fmt}: choose one of {', '.join([*KERAS_FORMAT, BIOIMAGEIO])}")
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
    with environment_kept():
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


def package_slice(run, channels: int, multiple: int) -> tuple[np.ndarray, str]:
    """Returns (the run's first report slice as its file holds it - (H, W, channels) uint8 or uint16, cut to a
    multiple of the model's size step from the top left - and its name). The pixels are recovered from the
    normalized slice and proven by the pixel digest split.json records."""
    from segexp.data.images import raw_pixels, to_channels
    from segexp.evaluation.slices import report_set

    data = report_set(run) if run.read_split() else None
    if data is None or not data.images:
        raise ConfigError(f"format=bioimageio: the run {run.path} has no report slice for the package's test tensors; "
                          "export a run trained with split.report")
    raw = raw_pixels(data.images[0], data.digests[0]) if data.digests else None
    if raw is None:
        raise ConfigError(f"format=bioimageio: the pixels of slice {data.names[0]} as read cannot be recovered (not an "
                          "8- or 16-bit file normalized by its dtype); export a run trained on such images")
    image = to_channels(raw, channels)
    image = np.rint(image).astype(raw.dtype) if image.dtype != raw.dtype else image  # a colour file for a gray model
    h, w = (image.shape[0] // multiple) * multiple, (image.shape[1] // multiple) * multiple
    if not h or not w:
        raise ConfigError(f"format=bioimageio: slice {data.names[0]} {list(image.shape[:2])} is smaller than the "
                          f"model's size step {multiple}")
    return np.ascontiguousarray(image[:h, :w]), data.names[0]


def package_content(cfg: DictConfig, run, outputs: int, slice_name: str) -> PackageContent:
    """Returns what the package says: name, a description with the training data and report scores, the README,
    the output's channels and segexp's record of the run."""
    from segexp.data.classes import parse_classes
    from segexp.inference.bioimageio_package import UNET, PackageContent
    from segexp.inference.predictor import run_target
    from segexp.tracking.trackers import logged_run
    from segexp.training.modelcard import SCORES

    saved, split = run.saved_config(), run.read_split()
    target, logged = run_target(run), logged_run(run.path)
    classes = parse_classes(saved.data.get("classes"), saved.data.get("ignore"))
    if target.affinities:
        output_id, channels = "affinities", [f"affinity_{dy}_{dx}" for dy, dx in target.offsets]
        meaning = ("affinities, one channel per offset [dy, dx] of " + ", ".join(f"[{dy}, {dx}]" for dy, dx in target.offsets)
                   + ": the probability that a pixel and its neighbour there are the same object")
    elif outputs == 1:
        output_id, channels = "probability", [classes.names[1]]
        meaning = f"the probability that a pixel is {classes.names[1]} (not {classes.names[0]})"
    else:
        output_id, channels = "probability", list(classes.names)
        meaning = "the probability of each class (softmax): " + ", ".join(classes.names)
    roles = {role: [entry["name"] for entry in split["roles"].get(role, [])] for role in ("train", "select", "report")}
    metrics = logged.metrics if logged else {}
    scores = [(label, metrics[key]) for key, label in SCORES if key in metrics]
    scored = ("; on them it scored " + ", ".join(f"{label} {value:.4f}" for label, value in scores)) if scores else \
        " (no report scores: the run was trained without tracking)"
    m = saved.model
    description = (f"U-Net (depth {m.depth}, {m.base_filters} base filters) trained with segexp on the {saved.data.name} "
                   f"data: {len(roles['train'])} training slices, the checkpoint chosen on {len(roles['select'])} selection "
                   f"slices, scored once on {len(roles['report'])} report slices no choice saw ({', '.join(roles['report'])})"
                   f"{scored}. Output: {meaning}. The package holds the network only; segexp's test-time augmentation "
                   "and segmentation stage are not in it.")
    provenance = {"run_id": logged.run_id if logged else None, "checkpoint": run.checkpoint.name,
                  # not the overrides: they may name this machine's paths
                  **({key: logged.tags[key] for key in ("code_digest", "git_commit", "git_dirty", "segexp_version")
                      if key in logged.tags} if logged else {}),
                  "test_slice": slice_name, "split": roles}
    p = cfg.package
    name = p.name or f"segexp U-Net {saved.data.name} {output_id}"
    documentation = package_readme(name, description, meaning, scores, provenance, UNET)
    return PackageContent(name=name, description=description, documentation=documentation, authors=list(p.authors),
                          license=p.license, tags=list(p.tags), output_id=output_id, channel_names=channels,
                          cites_isbi=saved.data.name == "isbi2012", provenance=provenance)


def package_readme(name: str, description: str, meaning: str, scores, provenance: dict, unet) -> str:
    """Returns the package's README (Markdown)."""
    table = (["| " + " | ".join(label for label, _ in scores) + " |", "|---" * len(scores) + "|",
              "| " + " | ".join(f"{value:.4f}" for _, value in scores) + " |"] if scores else
             ["No report scores were recorded (the run was trained with tracking=none)."])
    record = [f"- {key}: `{value}`" for key, value in provenance.items() if key != "split"]
    return "\n".join([
        f"# {name}", "", description, "",
        "## Input and output", "",
        "Input: the image as read from its file (8- or 16-bit), any size that is a multiple of the size step in "
        "rdf.yaml; the preprocessing divides it by its dtype's maximum, as segexp does before the network.",
        f"Output: {meaning}.", "",
        "## What is not in the package", "",
        "segexp predicts whole images by overlap-tile, optionally with 8-way test-time augmentation, and may follow "
        "the network with a segmentation stage (watershed, multicut, GASP, Mutex Watershed) whose parameters it chose "
        "on the selection slices. None of that is in the package: a tool running it gets the network's map. For "
        "segexp's segments, run `segexp predict ckpt=<run> input=... output=...`.", "",
        "## Scores on the report slices (segexp evaluate)", "", *table, "",
        "## Where it comes from", "", *record, "",
        "## Cite", "", f"- {unet[0]}, doi:{unet[1]}", "",
    ])


def export_bioimageio(cfg: DictConfig) -> list[FormatCheck]:
    """Writes the checkpoint's bioimage.io package to `output` (a .zip) and tests it with bioimageio.core; returns
    its FormatCheck per weight format, and raises ConfigError when one fails."""
    from segexp.inference.bioimageio_package import check_package, write_package
    from segexp.inference.predictor import model_channels_and_multiple, model_outputs
    from segexp.models.loading import load_model
    from segexp.tracking.provenance import tf_version
    from segexp.tracking.references import resolve_checkpoint

    check_config("export", cfg)
    output = Path(cfg.output)
    require("bioimageio.core", "format=bioimageio", BIOIMAGEIO_EXTRA)
    require("tf2onnx", "format=bioimageio (its ONNX weights)", BIOIMAGEIO_EXTRA)
    checkpoint, run = resolve_checkpoint(cfg.ckpt)
    check_bioimageio_run(run.saved_config() if run is not None else None, cfg.ckpt)
    model = load_model(checkpoint)
    channels, multiple = model_channels_and_multiple(model)
    raw, slice_name = package_slice(run, channels, multiple)
    content = package_content(cfg, run, model_outputs(model), slice_name)
    with environment_kept():
        write_package(model, raw, multiple, content, output, tf_version())
        checks = check_package(output)
    for check in checks:
        print(f"[segexp] bioimageio.core test of {output.name} with {check.weight_format} weights: "
              f"{'passed' if check.passed else 'FAILED'}" + ("" if check.passed else f" ({check.details})"), flush=True)
    print(f"[segexp] exported {checkpoint} as a bioimage.io package to {output}; test tensors: slice {slice_name} "
          f"({raw.shape[0]}x{raw.shape[1]})", flush=True)
    failed = [c.weight_format for c in checks if not c.passed]
    if failed:
        raise ConfigError(f"export: bioimageio.core's test fails with the {', '.join(failed)} weights (above); the "
                          f"package is kept at {output} for inspection")
    return checks
