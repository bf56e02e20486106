"""A predictor for a checkpoint: image (H, W, C) -> (H, W) probability of white (a binary model) or (H, W, K)
class probabilities (a K-class model), by overlap-tile prediction (and TTA) at the size its run trained on;
for a sweep's checkpoints, the mean of theirs."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, NamedTuple, Sequence

import numpy as np
from omegaconf import DictConfig, OmegaConf

from segexp.data.affinities import BOUNDARY, Target, target_of
from segexp.data.classes import parse_classes
from segexp.data.images import resize_image
from segexp.data.sets import Classes
from segexp.errors import ConfigError
from segexp.inference.tiling import predict_image, tta_offset_problem
from segexp.models.loading import load_model
from segexp.rundir import ModelSource, RunDir


def model_channels_and_multiple(model) -> tuple[int, int]:
    """Returns (input channels, the size multiple the model pads to)."""
    channels = int(model.input_shape[-1])
    pads = [layer.multiple for layer in model.layers if hasattr(layer, "multiple")]
    return channels, (pads[0] if pads else 1)


def model_outputs(model) -> int:
    """Returns the model's output channels: 1 for a binary model (the sigmoid probability of class 1), else
    its K class probabilities."""
    return int(model.output_shape[-1])


def inference_size(inference: DictConfig, run: RunDir | None) -> list[int] | None:
    """Returns the [height, width] the model should see: inference.resize, else the data.resize of the
    training run that wrote the checkpoint (its saved config), else None (native size).

    A model trained on resized slices (experiment=seed_replica: 512 -> 256) has learned structures at
    that scale; fed the native size it sees them twice as large and scores far lower.
    """
    if inference.resize is not None:
        size = list(inference.resize)
        if len(size) != 2 or min(size) < 1:
            raise ConfigError(f"inference.resize: must be null or [height, width] with both >= 1, got {size}")
        return size
    saved = run.saved_config() if run else None
    resize = OmegaConf.select(saved, "data.resize") if saved is not None else None
    return list(resize) if resize is not None else None


def at_size(predict: Callable[[np.ndarray], np.ndarray], size: Sequence[int]) -> Callable[[np.ndarray], np.ndarray]:
    """Returns `predict` run on the image resized to size = [height, width] as data.resize does in training,
    its probability map ((H, W) or (H, W, K): every class channel alike) resized back to the image's own size
    (bilinear)."""
    def run(image: np.ndarray) -> np.ndarray:
        return resize_probabilities(predict(resize_image(image, size)), image.shape[0], image.shape[1])
    return run


CV2_MAX_CHANNELS = 128  # cv2.resize refuses arrays of more channels


def resize_probabilities(prob: np.ndarray, height: int, width: int) -> np.ndarray:
    """Returns an (h, w) or (h, w, K) probability map resized to (height, width[, K]), bilinear on every channel."""
    import cv2

    if prob.ndim == 2:
        return cv2.resize(prob, (width, height), interpolation=cv2.INTER_LINEAR)
    # bilinear interpolation treats every channel on its own, so groups of channels resize as the whole would
    groups = [np.ascontiguousarray(prob[..., start:start + CV2_MAX_CHANNELS])
              for start in range(0, prob.shape[-1], CV2_MAX_CHANNELS)]
    resized = [cv2.resize(group, (width, height), interpolation=cv2.INTER_LINEAR) for group in groups]
    # cv2 drops a trailing channel of one (a last group holding a single class)
    return np.concatenate([r.reshape(height, width, -1) for r in resized], axis=-1)


def tile_predictor(model) -> Callable[[np.ndarray], np.ndarray]:
    """Returns tiles (N, h, w, C) -> the model's float32 outputs for them."""
    return lambda tiles: np.asarray(model.predict_on_batch(tiles), np.float32)


def make_predictor(model, inference: DictConfig, size: Sequence[int] | None = None,
                   target: Target = BOUNDARY) -> Callable[[np.ndarray], np.ndarray]:
    """Returns image (H, W, C) -> (H, W) probability of white (binary model), (H, W, K) class probabilities or,
    for an affinity `target`, (H, W, C) affinities, by overlap-tile prediction (at `size`, if given)."""
    _, multiple = model_channels_and_multiple(model)
    offsets = target.offsets if target.affinities else ()
    if offsets and inference.tta and (problem := tta_offset_problem(offsets)):
        raise ConfigError(f"inference.tta=true: {problem}; set inference.tta=false, or train with offsets that "
                          "flips and quarter turns map onto each other")

    predict_batch = tile_predictor(model)

    def predict(image: np.ndarray) -> np.ndarray:
        return predict_image(predict_batch, image, tile=inference.tile, overlap=inference.overlap,
                             batch_size=inference.batch_size, multiple=multiple, tta=inference.tta, offsets=offsets)
    return at_size(predict, size) if size else predict


class LoadedPredictor(NamedTuple):
    channels: int  # input channels the model takes
    outputs: int  # 1: (H, W) probability of class 1; K > 1: (H, W, K) class probabilities (or K affinities)
    predict: Callable[[np.ndarray], np.ndarray]
    target: Target = BOUNDARY  # what the outputs mean: its run's target group
    # tiles (N, h, w, C) -> outputs, for streaming an image tile by tile (inference/stream.py); None when the
    # model sees the image resized (its run's data.resize) or the ensemble's members pad to different multiples
    tiles: Callable[[np.ndarray], np.ndarray] | None = None
    multiple: int = 1  # tile sides are multiples of this


def run_target(run: RunDir | None) -> Target:
    """Returns the Target a checkpoint's run trained for (the boundary map for a run from before the group, or a
    checkpoint without a run)."""
    saved = run.saved_config() if run else None
    return target_of(OmegaConf.select(saved, "target") if saved is not None else None)


def load_predictor(checkpoint: Path, run: RunDir | None, inference: DictConfig) -> LoadedPredictor:
    """Returns the checkpoint's LoadedPredictor, at the size its run trained on."""
    size = inference_size(inference, run)  # config errors before the model loads
    target = run_target(run)
    model = load_model(checkpoint)
    channels, multiple = model_channels_and_multiple(model)
    if target.affinities and model_outputs(model) != len(target.offsets):
        raise ConfigError(f"{checkpoint}: its run's target.offsets name {len(target.offsets)} affinities, but the "
                          f"model has {model_outputs(model)} outputs; pass the run the checkpoint was trained in")
    if size:
        source = "inference.resize" if inference.resize is not None else "the training's data.resize"
        print(f"[segexp] predicting at {size[0]}x{size[1]} ({source}), probabilities resized back to each image",
              flush=True)
    return LoadedPredictor(channels, model_outputs(model), make_predictor(model, inference, size, target), target,
                           None if size else tile_predictor(model), multiple)


def load_source(source: ModelSource, inference: DictConfig) -> LoadedPredictor:
    """Returns the LoadedPredictor of a ModelSource: for an ensemble, the mean of its members' probabilities
    (each member at the size its own run trained on)."""
    loaded = [load_predictor(checkpoint, run, inference) for checkpoint, run in source.members]
    for field, what in (("channels", "take different input channels"), ("outputs", "have different outputs"),
                        ("target", "predict different targets")):
        values = sorted({getattr(member, field) for member in loaded}, key=str)
        if len(values) > 1:
            raise ConfigError(f"the ensemble's checkpoints {what} {values}; "
                              "name one checkpoint, or a sweep whose jobs trained on the same data")
    if not source.is_ensemble:
        return loaded[0]
    print(f"[segexp] ensemble of {len(loaded)} checkpoints (the mean of their probabilities): "
          + ", ".join(str(c.parent) for c, _ in source.members), flush=True)
    predictors = [member.predict for member in loaded]
    tiles = [member.tiles for member in loaded]
    # blending is linear: the mean of the members' tiles blends to the mean of their maps
    shared = None not in tiles and len({member.multiple for member in loaded}) == 1
    return loaded[0]._replace(predict=lambda image: np.mean([predict(image) for predict in predictors], axis=0),
                              tiles=(lambda batch: np.mean([t(batch) for t in tiles], axis=0)) if shared else None)


def default_classes(outputs: int) -> Classes:
    """Returns the classes of a model without a run config: binary for one output, else class0..classK-1."""
    return parse_classes(None if outputs == 1 else [f"class{i}" for i in range(outputs)])


def run_classes(run: RunDir | None) -> Classes | None:
    """Returns the classes a checkpoint's run trained on (its data.classes, with data.ignore), None without a run or
    a data.classes key; an affinity run's, declared or not, are two."""
    saved = run.saved_config() if run else None
    missing = object()
    declared = OmegaConf.select(saved, "data.classes", default=missing) if saved is not None else missing
    if declared is missing and not run_target(run).affinities:
        return None
    return parse_classes(None if declared is missing else declared, OmegaConf.select(saved, "data.ignore"))


def checkpoint_classes(run: RunDir | None, outputs: int) -> Classes:
    """Returns the classes a checkpoint predicts: its run's data.classes (with data.ignore), else default_classes;
    ConfigError in one line when the run's classes need another number of outputs than the model has."""
    classes = run_classes(run)
    if classes is None:
        return default_classes(outputs)
    if run_target(run).affinities:  # its outputs are affinities of the two classes' objects
        return classes
    if classes.outputs != outputs:
        raise ConfigError(f"{run.path}: the run's data.classes names {classes.count} classes ({classes.outputs} model "
                          f"outputs), but the checkpoint's model has {outputs} outputs; pass the run the checkpoint "
                          "was trained in")
    return classes


def source_classes(source: ModelSource, outputs: int) -> Classes:
    """Returns the classes the checkpoints of a ModelSource predict (checkpoint_classes); ConfigError when the
    members' runs declare different ones."""
    found = [checkpoint_classes(run, outputs) for _, run in source.members]
    if any(classes != found[0] for classes in found):
        raise ConfigError(f"the ensemble's runs declare different data.classes {sorted({c.names for c in found})}; "
                          "name one checkpoint, or a sweep whose jobs trained on the same data")
    return found[0]
