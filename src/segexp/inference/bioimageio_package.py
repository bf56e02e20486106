"""A checkpoint as a bioimage.io model package (bioimageio.spec 0.5), the format ilastik, deepImageJ/Fiji, QuPath
and napari run: rdf.yaml, the network as ONNX and as a TensorFlow SavedModel, the input normalization as the
package's preprocessing, a real slice and the network's output on it as test tensors, a cover and a README.
`check_package` runs bioimageio.core's own test of the package, once per weight format.

The package holds the network only: segexp's test-time augmentation and segmentation stage (watershed, Mutex
Watershed, ...) are not in it, and its output is the probability map (or the affinities) the network gives.
The only module that imports bioimageio; the weights are written by Keras' own exporters.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from segexp.errors import ConfigError

UNET = ("Ronneberger O., Fischer P., Brox T. (2015) U-Net: Convolutional Networks for Biomedical Image "
        "Segmentation. MICCAI 2015, LNCS 9351", "10.1007/978-3-319-24574-4_28")
ISBI_2012 = ("Arganda-Carreras I. et al. (2015) Crowdsourcing the creation of image segmentation algorithms for "
             "connectomics. Front. Neuroanat. 9:142 (the ISBI 2012 EM segmentation challenge data)",
             "10.3389/fnana.2015.00142")
WEIGHT_FORMATS = ("onnx", "tensorflow_saved_model_bundle")
COVER_PANEL = 256  # pixels of each half of the cover (the slice, the prediction): 2:1, as the spec asks


@dataclass(frozen=True)
class PackageContent:
    """What the package says beyond the network: who made it, from which run, and what it scored."""

    name: str
    description: str  # one paragraph: the training data and the report scores
    documentation: str  # the README, Markdown
    authors: Sequence[str]
    license: str
    tags: Sequence[str]
    output_id: str  # "probability" or "affinities"
    channel_names: Sequence[str]  # one per output channel
    cites_isbi: bool = False
    provenance: dict = field(default_factory=dict)  # segexp's record of the run: run id, code digest, commit


def package_tensors(model, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Returns (the test input: a batch of the raw slice, (1, H, W, C) in its file dtype; the test output: Keras'
    output on it after the normalization the package describes, (1, H, W, K) float32)."""
    from segexp.data.images import to_unit_float

    batch = raw[None]
    return batch, np.asarray(model.predict_on_batch(to_unit_float(batch)), np.float32)


def cover_image(raw: np.ndarray, output: np.ndarray, classes: bool) -> np.ndarray:
    """Returns a uint8 RGB cover (COVER_PANEL x 2 COVER_PANEL): the slice beside the network's output on it - the
    probability map, the mean of the affinities, or with `classes` each pixel's most probable class in gray levels."""
    import cv2

    gray = raw.astype(np.float32).mean(axis=-1) / np.iinfo(raw.dtype).max
    if output.shape[-1] == 1:
        prediction = output[0, ..., 0]
    elif classes:
        prediction = output[0].argmax(axis=-1).astype(np.float32) / (output.shape[-1] - 1)
    else:
        prediction = output[0].mean(axis=-1)
    panels = [cv2.resize(np.clip(p, 0, 1), (COVER_PANEL, COVER_PANEL), interpolation=cv2.INTER_AREA)
              for p in (gray, prediction)]
    both = (np.concatenate(panels, axis=1) * 255).round().astype(np.uint8)
    return np.repeat(both[..., None], 3, axis=-1)


def write_weights(model, folder: Path) -> dict[str, Path]:
    """Returns {weight format: file} of the model written as ONNX and as a zipped TensorFlow SavedModel whose
    `serve` endpoint returns {"output": ...} (bioimageio.core reads a SavedModel's outputs as a dict)."""
    import keras
    import tensorflow as tf

    onnx = folder / "weights.onnx"
    model.export(str(onnx), format="onnx", verbose=False)
    archive = keras.export.ExportArchive()
    archive.track(model)
    spec = tf.TensorSpec((None, None, None, int(model.input_shape[-1])), tf.float32)
    archive.add_endpoint("serve", lambda x: {"output": model(x, training=False)}, input_signature=[spec])
    saved = folder / "saved_model"
    archive.write_out(str(saved), verbose=False)
    bundle = shutil.make_archive(str(folder / "tf_saved_model"), "zip", saved)
    shutil.rmtree(saved)
    return {"onnx": onnx, "tensorflow_saved_model_bundle": Path(bundle)}


def onnx_opset(path: Path) -> int:
    import onnx

    return max(entry.version for entry in onnx.load(str(path), load_external_data=False).opset_import
               if entry.domain in ("", "ai.onnx"))


def describe(content: PackageContent, files: dict[str, Path], raw: np.ndarray, multiple: int, tf_version: str):
    """Returns the bioimageio.spec 0.5 ModelDescr of the package whose files are `files`."""
    from bioimageio.spec.model import v0_5 as spec

    dtype = raw.dtype.name
    top = float(np.iinfo(raw.dtype).max)
    space = [spec.SpaceInputAxis(id=spec.AxisId(a), size=spec.ParameterizedSize(min=multiple, step=multiple))
             for a in ("y", "x")]
    source = spec.InputTensorDescr(
        id=spec.TensorId("raw"),
        description=f"{dtype} image as read from its file, channels last; the preprocessing divides by {top:g}",
        axes=[spec.BatchAxis(), *space,
              spec.ChannelAxis(channel_names=[f"channel{i}" for i in range(raw.shape[-1])] if raw.shape[-1] > 1
                               else ["gray"])],
        test_tensor=spec.FileDescr(source=files["test_input"]),
        data=spec.IntervalOrRatioDataDescr(type=dtype, range=(0.0, top)),
        # the last ensure_dtype is what the network gets: without it the spec casts back to the file's dtype
        preprocessing=[spec.EnsureDtypeDescr(kwargs=spec.EnsureDtypeKwargs(dtype="float32")),
                       spec.ScaleLinearDescr(kwargs=spec.ScaleLinearKwargs(gain=1.0 / top)),
                       spec.EnsureDtypeDescr(kwargs=spec.EnsureDtypeKwargs(dtype="float32"))],
    )
    result = spec.OutputTensorDescr(
        id=spec.TensorId(content.output_id),
        description="the network's sigmoid (softmax for classes) output, before any segmentation stage",
        axes=[spec.BatchAxis(),
              *[spec.SpaceOutputAxis(id=spec.AxisId(a), size=spec.SizeReference(tensor_id=spec.TensorId("raw"),
                                                                                 axis_id=spec.AxisId(a)))
                for a in ("y", "x")],
              spec.ChannelAxis(channel_names=list(content.channel_names))],
        test_tensor=spec.FileDescr(source=files["test_output"]),
        data=spec.IntervalOrRatioDataDescr(type="float32", range=(0.0, 1.0)),
    )
    cite = [spec.CiteEntry(text=text, doi=spec.Doi(doi)) for text, doi in [UNET, *([ISBI_2012] * content.cites_isbi)]]
    weights = spec.WeightsDescr(
        tensorflow_saved_model_bundle=spec.TensorflowSavedModelBundleWeightsDescr(
            source=files["tensorflow_saved_model_bundle"], tensorflow_version=spec.Version(tf_version)),
        onnx=spec.OnnxWeightsDescr(source=files["onnx"], opset_version=onnx_opset(files["onnx"]),
                                   parent="tensorflow_saved_model_bundle"),
    )
    return spec.ModelDescr(
        name=content.name, description=content.description, authors=[spec.Author(name=a) for a in content.authors],
        cite=cite, license=spec.LicenseId(content.license), tags=list(content.tags),
        documentation=spec.FileDescr(source=files["documentation"]), covers=[spec.FileDescr(source=files["cover"])],
        inputs=[source], outputs=[result],
        weights=weights, config=spec.Config(segexp=content.provenance),
    )


def write_package(model, raw: np.ndarray, multiple: int, content: PackageContent, output: Path,
                  tf_version: str) -> Path:
    """Writes the zip package to `output` and returns it; `raw` is the test slice as read, (H, W, C) in its
    integer file dtype, with C the model's input channels and H, W multiples of `multiple`."""
    from bioimageio.spec import save_bioimageio_package
    from bioimageio.spec.common import ValidationError
    from PIL import Image

    with tempfile.TemporaryDirectory(prefix="segexp-bioimageio-") as folder:
        folder = Path(folder)
        test_input, test_output = package_tensors(model, raw)
        files = write_weights(model, folder)
        files.update(test_input=folder / "test_input.npy", test_output=folder / "test_output.npy",
                     cover=folder / "cover.png", documentation=folder / "README.md")
        np.save(files["test_input"], test_input)
        np.save(files["test_output"], test_output)
        Image.fromarray(cover_image(raw, test_output, content.output_id == "probability")).save(files["cover"])
        files["documentation"].write_text(content.documentation)
        try:
            description = describe(content, files, raw, multiple, tf_version)
        except ValidationError as err:
            raise ConfigError(f"export: bioimageio.spec refuses the package's description: {one_line(err)}") from err
        output.parent.mkdir(parents=True, exist_ok=True)
        save_bioimageio_package(description, output_path=output)
    return output


def one_line(text, limit: int = 500) -> str:
    """Returns text (an error and its details) on one line, cut to `limit` characters."""
    return " ".join(str(text).split())[:limit]


@dataclass(frozen=True)
class FormatCheck:
    weight_format: str
    passed: bool
    details: str  # bioimageio.core's failed checks and errors, or its passed checks' names


def check_package(package: Path) -> list[FormatCheck]:
    """Returns bioimageio.core's test of the package for each weight format: the description validates, the
    weights load, and they reproduce the test output from the test input within the spec's tolerance."""
    import contextlib

    from bioimageio.core import test_model

    package, checks = Path(package).resolve(), []
    for weight_format in WEIGHT_FORMATS:
        # bioimageio.core unzips a SavedModel into a folder of the current directory: keep it out of the user's
        with tempfile.TemporaryDirectory(prefix="segexp-bioimageio-test-") as scratch, contextlib.chdir(scratch):
            summary = test_model(package, weight_format=weight_format)
        failed = [d for d in summary.details if d.status == "failed"]
        details = one_line("; ".join(f"{d.name}: " + " ".join(e.msg for e in d.errors) for d in failed), 2000) \
            if failed else "; ".join(d.name for d in summary.details)
        checks.append(FormatCheck(weight_format, summary.status == "passed", details))
    return checks

