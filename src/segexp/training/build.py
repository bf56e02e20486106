"""The pieces the composition root (training.train) builds from a config, each on its own so benchmarks
and tests can build exactly what a run builds: the checked data split, the compiled model, the speed
setting (precision, XLA), the augmentation pipeline and schedule, the augmented training stream, and
the fit loop."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from segexp.config.instantiate import instantiate
from segexp.data import datasets, splits
from segexp.data.affinities import target_of
from segexp.data.classes import balanced_weights
from segexp.data.sets import BINARY, IGNORE, Classes, SegmentationSet


def prepare_data(cfg: DictConfig) -> tuple[dict[str, SegmentationSet], list | None]:
    """Returns ({"train", "select", "report": SegmentationSet}, border weight maps of the training
    slices or None), all validated. Training and selection slices come at the training resolution
    (data.resize); report slices always at the labels' own, as `segexp evaluate` scores them."""
    dataset = datasets.load(cfg.data)
    select, report = splits.held_out(cfg.split.select, cfg.split.report, len(dataset.images), cfg.data.folds,
                                       cfg.data.fold)
    parts = splits.split(dataset, select, report)
    if cfg.data.resize is not None:
        parts["report"] = splits.split(datasets.load(cfg.data, at_labels=True), select, report)["report"]
    weights = None
    if cfg.loss.weight_map is not None:
        weigh = instantiate(cfg.loss.weight_map)  # mask -> weight map
        weights = [weigh(m) for m in parts["train"].masks]
    return parts, weights


def class_weights(setting, train_set: SegmentationSet) -> list[float] | None:
    """Returns loss.fn.class_weights as one weight per class: as listed, from the training masks' class
    frequencies for `balanced`, or None (all 1); checks.check_training_data has checked the setting."""
    if setting is None:
        return None
    if setting == "balanced":
        return balanced_weights(train_set.masks, train_set.classes.count)
    return [float(w) for w in setting]


def dice_class_indices(names, classes: Classes) -> list[int] | None:
    """Returns the indices of loss.fn.dice_classes (checked by checks.check_training_data), or None (all)."""
    if names is None:
        return None
    return [classes.names.index(n) for n in names]


def build_model(cfg: DictConfig, channels: int, foreground: int, learning_rate, jit_compile: bool,
                classes: Classes = BINARY, weights: list[float] | None = None):
    """Returns the Keras model of the model group with a head for `classes` (or one sigmoid per affinity offset of
    the target group), compiled with the loss group's loss (per-class `weights`, see class_weights) and the
    optimizer group's optimizer at `learning_rate` (the schedule's), with XLA if `jit_compile`."""
    from segexp.models.metrics import segmentation_metrics

    target = target_of(cfg.get("target"))
    affinities = len(target.offsets) if target.affinities else 0
    head = {"outputs": affinities, "independent_outputs": True} if affinities else {"outputs": classes.outputs}
    model = instantiate(cfg.model, channels=channels, **head)
    ema = {"use_ema": True, "ema_momentum": cfg.optimizer.ema} if cfg.optimizer.ema is not None else {}
    optimizer = instantiate(cfg.optimizer.fn, learning_rate=learning_rate, **ema)
    loss = instantiate(cfg.loss.fn, classes=classes.count, class_weights=weights, affinities=affinities,
                       dice_classes=dice_class_indices(cfg.loss.fn.dice_classes, classes))
    model.compile(optimizer=optimizer, loss=loss, metrics=segmentation_metrics(foreground, classes.count, affinities),
                  jit_compile=jit_compile)
    return model


def build_training_state(model, data) -> None:
    """Creates the optimizer's, the loss's and the metrics' variables for batches like `data` (a batch of
    arrays, or a tf.data stream's element_spec) before the first training step.

    Keras' TensorFlow trainer builds them up front only under a distribution strategy; otherwise they are
    created inside the first trace of the train step, and TensorFlow traces a function that creates variables
    twice. Built here, fit and train_on_batch trace once: about a third of a tiny run's fit, seconds for a deep
    model. `Model._symbolic_build` is the private method Keras uses for this, with no public equivalent;
    tests/test_train.py fails if Keras changes so that it no longer spares the trace (or does not need to)."""
    with model.distribute_strategy.scope():  # a strategy's variables are made in its scope (one per replica)
        model._symbolic_build(data_batch=data)


def choose_speed(cfg: DictConfig, strategy, channels: int, foreground: int, weighted: bool,
                 classes: Classes = BINARY):
    """Returns the speed_probe.SpeedChoice for trainer.precision and trainer.jit_compile: as set, or for
    `auto` the fastest by a timed probe of this model at this crop and batch (cached per machine)."""
    import numpy as np

    from segexp.training import speed_probe

    t = cfg.trainer
    shape = (t.batch_size, t.crop_size, t.crop_size)
    rng = np.random.default_rng(0)
    target = target_of(cfg.get("target"))
    if target.affinities:  # affinity targets and their masks
        targets = rng.integers(2, size=(*shape, 2 * len(target.offsets))).astype(np.float32)
    else:
        targets = rng.integers(classes.count, size=(*shape, 1)).astype(np.float32)
    batch = (rng.random((*shape, channels), np.float32),
             np.concatenate([targets, np.ones_like(targets)], -1) if weighted else targets)

    def build(jit: bool):
        with strategy.scope():
            model = build_model(cfg, channels, foreground, 1e-3, jit, classes)
            build_training_state(model, batch)  # the probe's warm-up then traces once, as fit does
            return model

    workload = {"model": OmegaConf.to_container(cfg.model, resolve=True), "batch_shape": [*shape, channels],
                "weighted": weighted, "strategy": t.strategy, "replicas": strategy.num_replicas_in_sync,
                **({"classes": classes.count} if not classes.binary else {}),
                **({"affinities": len(target.offsets)} if target.affinities else {})}
    return speed_probe.resolve(str(t.precision), t.jit_compile, build, batch, workload,
                               Path(t.speed_cache) if t.speed_cache else None,
                               multi_worker=t.strategy == "multi_worker_mirrored",
                               log=lambda line: print(f"[segexp] {line}", flush=True))


@dataclass(frozen=True)
class Components:
    """The configured pieces built once the data is checked and TensorFlow is loaded."""

    pipeline: Any  # the aug group's albumentations pipeline
    schedule: Any  # the optimizer.schedule node's schedules.Schedule: the rate and its callbacks
    callbacks: list  # the schedule's callbacks, then the callbacks group's, in config order


def build_components(cfg: DictConfig) -> Components:
    """Returns the augmentation pipeline, the learning-rate schedule and the extra callbacks of the config."""
    schedule = instantiate(cfg.optimizer.schedule)
    return Components(pipeline=instantiate(cfg.aug, _convert_="all"), schedule=schedule,
                      callbacks=[*schedule.callbacks,
                                 *(instantiate(node) for node in cfg.callbacks.values() if node is not None)])


def training_stream(cfg: DictConfig, train_set, weights, pipeline, first_sample: int = 0):
    """Returns the endless tf.data stream of augmented training crops that fit consumes: `pipeline`
    (the built aug group) applied to random crops, samples numbered from `first_sample`."""
    from segexp.samples.stream import training_dataset

    t = cfg.trainer
    sampler = crop_sampler(cfg, train_set, weights, pipeline)
    return training_dataset(sampler, train_set.channels, sampler.target_channels, t.batch_size,
                            first_sample=first_sample, parallel_calls=t.aug_workers)


def crop_sampler(cfg: DictConfig, train_set, weights, pipeline):
    """Returns the CropSampler of augmented training crops and their targets: the mask (and border weights), or
    for target=affinities the slices' object ids (their instance ids, or their masks' cells), moved with the image,
    then turned into affinity targets."""
    from functools import partial

    from segexp.data.affinities import affinity_target, slice_objects
    from segexp.samples.augment import CropSampler

    t, target = cfg.trainer, target_of(cfg.get("target"))
    if not target.affinities:
        return CropSampler(train_set.images, train_set.masks, pipeline, t.crop_size, t.seed, weights)
    ids = slice_objects(train_set.masks, train_set.objects, train_set.foreground, IGNORE)
    return CropSampler(train_set.images, ids, pipeline, t.crop_size, t.seed,
                       to_target=partial(affinity_target, offsets=target.offsets),
                       target_channels=2 * len(target.offsets))


def fit(cfg: DictConfig, model, stream, callbacks, initial_epoch: int = 0) -> dict[str, list[float]]:
    """Runs model.fit on the training stream from `initial_epoch` on; returns the Keras history."""
    t = cfg.trainer
    # no validation_data: SliceValidation (in callbacks) predicts the selection slices once per epoch
    verbose = fit_verbosity(t.verbose)
    if verbose is None:  # not a terminal: our own line per epoch, after every callback has added its scores
        from segexp.training.callbacks import EpochLine

        callbacks, verbose = [*callbacks, EpochLine(t.epochs, t.max_minutes, lambda line: print(line, flush=True))], 0
    build_training_state(model, stream.element_spec)
    if t.strategy == "multi_worker_mirrored":
        from segexp.training.runtime import prepare_multi_worker_fit

        prepare_multi_worker_fit(model)
    history = model.fit(stream, epochs=t.epochs, initial_epoch=initial_epoch, steps_per_epoch=t.steps_per_epoch,
                        callbacks=callbacks, verbose=verbose, shuffle=False)  # the sampler draws random crops
    return history.history


def fit_verbosity(verbose: int | None, stream=None) -> int | None:
    """Returns Keras' verbose for trainer.verbose: as set, or for null Keras' live progress bar (1) on a
    terminal and None - segexp's one line per epoch - when output goes to a file, a pipe, CI or a scheduler."""
    import sys

    if verbose is not None:
        return verbose
    return 1 if (stream or sys.stdout).isatty() else None
