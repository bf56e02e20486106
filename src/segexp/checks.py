"""Every cross-field check of a config, in one module: what the schemas' types cannot say (a range, two keys that
must agree, an option that means nothing beside another). Each raises ConfigError (DataError for the data's own
shape) with one line naming the key and what to do.

Two kinds, one place:
- `check_config(command, cfg)`: the config alone. The command line's preflight runs it on every sweep variant of
  every command before Hydra starts a job; the commands run it again on the config they were handed.
- the checks that need what only data or a checkpoint knows (the data's classes, an image's size, a checkpoint's
  outputs and target) take those as arguments and are called where that is read.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

from omegaconf import DictConfig

from segexp.data.affinities import Target, check_offsets, target_of
from segexp.data.classes import parse_classes
from segexp.data.sets import Classes, SegmentationSet
from segexp.errors import ConfigError, DataError
from segexp.inference.tiling import tta_offset_problem
from segexp.postprocessing import stage as stages
from segexp.rundir import RunDir


def require(ok: bool, key: str, message: str) -> None:
    """Raises ConfigError "key: message" unless ok."""
    if not ok:
        raise ConfigError(f"{key}: {message}")


# ---- the config alone ----------------------------------------------------------------------------------------

def check_config(command: str, cfg: Any) -> None:
    """Runs the checks of `command`'s config that need nothing else: all of train's; the data and segmentation
    stage of evaluate and predict (the stage's target is known only from the checkpoint's run: check_stage runs
    again with it, before the model loads)."""
    if command == "train":
        check_train(cfg)
        return
    if command == "export":
        check_export(cfg)
    if cfg.get("data") is not None:
        check_data(cfg.data)
    if command in ("evaluate", "predict") and cfg.get("postprocess") is not None:
        check_stage(cfg.postprocess)
    if command == "predict":
        check_predict_output(cfg)


def check_predict_output(cfg: Any) -> None:
    """predict's output options: a positive stream_megapixels; with output_format=zarr, none of the options a
    streamed prediction cannot honour (streaming_problem)."""
    require(0 < cfg.stream_megapixels < math.inf, "stream_megapixels",
            f"must be > 0 (megapixels per slice), got {cfg.stream_megapixels}")
    if str(cfg.output_format) == "zarr":
        method = cfg.postprocess.method if cfg.get("postprocess") is not None else "none"
        if problem := streaming_problem(cfg, str(method)):
            raise ConfigError(f"output_format=zarr: {problem}")


def streaming_problem(cfg: Any, stage_method: str, tiles_available: bool = True) -> str | None:
    """Returns why `cfg` cannot be predicted as a stream of tiles (inference/stream.py), as a phrase naming the
    key and what to do, or None. Each option below needs the whole image at once: TTA turns it, percentile
    normalization and a resize read all of it, a segmentation stage segments it whole (segexp's stages have no
    blockwise form), an overlay is a picture of it."""
    whole = "needs the whole image in memory, but a streamed prediction reads a band of tiles at a time"
    if stage_method != "none":
        return (f"postprocess={stage_method} {whole}; set postprocess=none to write the probability map alone, or "
                "output_format=png for an image that fits in memory")
    if cfg.inference.tta:
        return f"inference.tta=true {whole}; set inference.tta=false"
    if str(cfg.normalize) == "percentile":
        return f"normalize=percentile {whole}; set normalize=dtype"
    if cfg.save_overlay:
        return f"save_overlay=true {whole}; set save_overlay=false"
    if not tiles_available:
        return ("the checkpoint sees images resized (inference.resize or its run's data.resize) or is an ensemble "
                "of models padding to different sizes, which needs the whole image; set output_format=png")
    return None


def check_train(cfg: Any) -> None:
    """Raises ConfigError for the first train config mistake: a value out of range, a choice made on slices that
    do not exist or on the report slices, options the data's classes or the target cannot use, a stage that
    cannot run."""
    check_values(cfg)
    check_data(cfg.data)
    check_choices(cfg)
    check_classes(cfg)
    check_target(cfg)
    check_postprocess(cfg)


def check_values(cfg: Any) -> None:
    """Ranges of single values."""
    m, t, o, data = cfg.model, cfg.trainer, cfg.optimizer, cfg.data
    require(m.depth >= 1, "model.depth", f"must be >= 1, got {m.depth}")
    require(m.base_filters >= 1, "model.base_filters", f"must be >= 1, got {m.base_filters}")
    require(0 <= m.dropout < 1, "model.dropout", f"must be in [0, 1), got {m.dropout}")
    require(0 < o.lr < math.inf, "optimizer.lr", f"must be > 0 and finite, got {o.lr}")
    require(o.ema is None or 0 < o.ema < 1, "optimizer.ema",
            f"must be null (off) or in (0, 1), e.g. 0.99, got {o.ema}")
    loss = cfg.loss.fn
    for term in ("bce", "dice", "cldice"):
        require(loss[term] >= 0, f"loss.fn.{term}",
                f"is a weight: must be >= 0 (0 turns the term off), got {loss[term]}")
    require(loss.skeleton_iterations >= 1, "loss.fn.skeleton_iterations",
            f"must be >= 1 (about half the thickness of the structures), got {loss.skeleton_iterations}")
    for key in ("epochs", "steps_per_epoch", "batch_size", "crop_size"):
        require(t[key] >= 1, f"trainer.{key}", f"must be >= 1, got {t[key]}")
    require(isinstance(t.jit_compile, bool) or t.jit_compile == "auto", "trainer.jit_compile",
            f"must be true, false or auto, got {t.jit_compile}")
    folds, fold = data.folds, data.fold
    require((folds is None) == (fold is None), "data.fold" if fold is None else "data.folds",
            "data.folds and data.fold go together, e.g. data.folds=6 data.fold=0 (or -m data.fold=range(6))")
    require(folds is None or folds >= 3, "data.folds", f"must be >= 3 (train, select and report blocks), got {folds}")
    require(folds is None or 0 <= fold < folds, "data.fold", f"must be in 0..{folds - 1 if folds else 0}, got {fold}")
    require(0 <= cfg.tracking.outage_wait < math.inf, "tracking.outage_wait",
            f"must be >= 0 seconds, got {cfg.tracking.outage_wait}")
    require(data.channels in (None, 1, 3), "data.channels", f"must be null, 1 or 3, got {data.channels}")
    require(data.foreground in (0, 1), "data.foreground", f"must be 0 or 1, got {data.foreground}")
    require(data.resize is None or (len(data.resize) == 2 and min(data.resize) >= 1), "data.resize",
            f"must be null or [height, width] with both >= 1, got {data.resize}")


def check_data(data: Any) -> None:
    """Options of the data group that exclude each other: object ids (data.labels=instances) derive two classes,
    boundary and object, and need no threshold."""
    if str(data.get("labels")) != "instances":
        return
    classes = parse_classes(data.get("classes"), data.get("ignore"))
    require(classes.binary and classes.values is None, "data.classes",
            f"data.labels=instances derives two classes (boundary, object) from the ids, but data.classes="
            f"{list(classes.names)}; give two class names, boundary first")
    require(data.get("mask_threshold") is None, "data.mask_threshold",
            "binarizes masks; data.labels=instances derives the boundary from the ids - leave data.mask_threshold=null")


def check_export(cfg: Any) -> None:
    """A bioimage.io package is one zip of a model of any size."""
    if str(cfg.format) != "bioimageio":
        return
    if not str(cfg.output).endswith(".zip"):
        raise ConfigError(f"format=bioimageio writes one zip package: output={cfg.output} must end in .zip")
    if cfg.size is not None:
        raise ConfigError("format=bioimageio: size= does not apply; the package takes any size its model does")


def epoch_metrics(classes: Any) -> set[str]:
    """Returns the names an epoch's logs hold for data.classes (None: ISBI's two classes): the training crops'
    loss, accuracy, dice, iou and per class dice_<class> / iou_<class>, and all of them with select_, plus
    select_v_rand and select_v_info, on the selection slices."""
    names = ["background", "foreground"] if classes is None else \
        [str(c) if isinstance(c, str) else str(c.get("name")) for c in classes]
    plain = {"loss", "accuracy", "dice", "iou", *(f"{s}_{n}" for n in names for s in ("dice", "iou"))}
    return plain | {f"select_{m}" for m in plain | {"v_rand", "v_info"}}


def check_choices(cfg: Any) -> None:
    """What chooses the checkpoint, the schedule's and callbacks' steps and the sweep's objective: a metric an
    epoch logs, on selection slices that exist, never on the report slices."""
    t, o, select = cfg.trainer, cfg.optimizer, cfg.split.select
    require(t.checkpoint == "last" or len(select) >= 1, "split.select",
            "is empty, so nothing can choose the best checkpoint; name selection slices or set trainer.checkpoint=last")
    watchers = {key: str(node.get("monitor")) for key, node in
                [("optimizer.schedule", o.schedule), *((f"callbacks.{k}", v) for k, v in cfg.callbacks.items())]
                if node is not None and "monitor" in node}
    require(len(select) >= 1 or not any(m.startswith("select_") for m in watchers.values()), "split.select",
            f"is empty, but {', '.join(watchers)} watch(es) the selection slices; name some")
    for key, metric in {"objective": str(cfg.objective), "trainer.monitor": str(t.monitor),
                        **{f"{k}.monitor": m for k, m in watchers.items()}}.items():
        require(not metric.startswith("report_"), key,
                f"{metric} would choose on the report slices; use a selection score such as select_v_rand")
    for key, metric in (("trainer.monitor", str(t.monitor)), ("objective", str(cfg.objective))):
        require(t.topology_metrics or metric not in ("select_v_rand", "select_v_info"), key,
                f"{metric} needs trainer.topology_metrics=true (or choose by select_dice / select_loss)")
    known = epoch_metrics(cfg.data.get("classes"))
    require(str(t.monitor) in known, "trainer.monitor",
            f"{t.monitor} is no metric of an epoch; choose one of {', '.join(sorted(known))}")
    require(len(select) >= 1 or not str(cfg.objective).startswith("select_"), "objective",
            f"{cfg.objective} is a selection score, but split.select is empty; name selection slices")


def check_classes(cfg: Any) -> None:
    """Options that need two fully labelled classes (topology scores, border weights, clDice, a postprocess
    stage) on data with more classes or unlabelled pixels; class weights or Dice classes that do not fit
    data.classes (a run's config from before classes existed has two)."""
    classes = parse_classes(cfg.data.get("classes"), cfg.data.get("ignore"))  # runs from before classes have neither
    fn = cfg.loss.fn
    check_class_weights(fn.get("class_weights"), classes)
    check_dice_classes(fn.get("dice_classes"), classes)
    if classes.topology:
        return
    why = (f"data.classes lists {classes.count} classes" if not classes.binary else
           f"data.ignore={cfg.data.ignore} leaves pixels unlabelled")
    for key, metric in (("trainer.monitor", str(cfg.trainer.monitor)), ("objective", str(cfg.objective))):
        require(metric.removeprefix("select_") not in ("v_rand", "v_info"), key,
                f"{metric} scores binary boundary maps, but {why}; choose by select_dice (the mean over classes), "
                "select_dice_<class> or select_loss")
    require(cfg.postprocess.method == "none", "postprocess",
            f"postprocess={cfg.postprocess.method} segments binary boundary maps, but {why}; use postprocess=none")
    require(cfg.loss.weight_map is None, "loss.weight_map",
            f"border weights are drawn between two fully labelled classes, but {why}; use loss=bce_dice or "
            "loss=focal_dice")
    require(not fn.get("cldice"), "loss.fn.cldice",
            f"clDice scores the centrelines of one fully labelled foreground class, but {why}; set loss.fn.cldice=0")


def check_target(cfg: Any) -> None:
    """target=affinities with offsets it cannot use, or with options that mean nothing for affinities: border
    weight maps, clDice, class weights, more than two classes, TTA over offsets that flips and quarter turns do
    not map onto each other."""
    target = target_of(cfg.get("target"))
    if not target.affinities:
        return
    problems = check_offsets(cfg.target.offsets)
    require(not problems, "target.offsets", problems[0].removeprefix("target.offsets: ") if problems else "")
    fn, why = cfg.loss.fn, "target=affinities"
    require(cfg.loss.weight_map is None, "loss.weight_map",
            f"border weight maps weigh a boundary map's pixels; {why} has no such map: use loss=bce_dice, bce or dice")
    require(not fn.get("cldice"), "loss.fn.cldice", f"clDice thins a boundary map; {why} has none: set it to 0 "
            "(loss=bce_dice)")
    require(fn.get("class_weights") is None, "loss.fn.class_weights",
            f"class weights weigh a map's classes; {why} weighs its pairs by BCE and Dice of the cuts: set it to null")
    classes = parse_classes(cfg.data.get("classes"), cfg.data.get("ignore"))
    require(classes.binary, "data.classes", f"{why} learns the objects of a boundary mask of two classes, but "
            f"data.classes lists {classes.count}; use target=boundary")
    problem = tta_offset_problem(target.offsets) if cfg.inference.tta else None
    require(problem is None, "inference.tta", f"{problem}; set inference.tta=false, or offsets closed under flips "
            "and quarter turns")


def check_postprocess(cfg: Any) -> None:
    """A training run's postprocess stage that cannot run: bad parameters, a partitioning of affinities on a
    boundary model, or nothing to choose on."""
    check_stage(cfg.postprocess, target_of(cfg.get("target")))
    if stages.needs_selection(cfg.postprocess) and len(cfg.split.select) == 0:
        raise ConfigError(f"postprocess={cfg.postprocess.method} chooses its parameters on the selection slices, "
                          "but split.select is empty; name selection slices or set postprocess.tune=false")


# each stage parameter's range, closed at both ends (None: no upper bound)
STAGE_RANGES = {"seed_threshold": (0.0, 1.0), "merge_threshold": (0.0, 1.0), "min_seed_size": (0, None),
                "sigma": (0.0, None), "bias": (0.0, 1.0), "threshold": (0.0, 1.0), "beta": (0.0, 1.0),
                "sigma_seeds": (0.0, None), "min_size": (0, None)}


def check_stage(node: DictConfig | None, target: Target | None = None) -> None:
    """A postprocess node's parameter the method does not take or lacks, an empty grid value, a value out of
    range, or (when the model's `target` is known) a method that segments affinities on a boundary model."""
    method, params, grid, _ = stages.configured(node)
    if method == "none":
        return
    if target is not None and stages.SEGMENTERS[method][1] == "affinities" and not target.affinities:
        raise ConfigError(f"postprocess={method} partitions affinities, but this model predicts a boundary map "
                          "(target=boundary); train with target=affinities, or use postprocess=watershed, "
                          "multicut or gasp")
    takes = stages.method_params(method)
    for key, given in (("params", params), ("grid", grid)):
        unknown, missing = sorted(set(given) - set(takes)), sorted(set(takes) - set(given))
        if unknown or missing:
            raise ConfigError(f"postprocess.{key}: {method} takes {', '.join(takes)}"
                              + (f"; unknown: {', '.join(unknown)}" if unknown else "")
                              + (f"; missing: {', '.join(missing)}" if missing else ""))
    for name, values in [*((f"grid.{k}", list(v) if isinstance(v, (list, tuple)) else [v]) for k, v in grid.items()),
                         *((f"params.{k}", [v]) for k, v in params.items())]:
        low, high = STAGE_RANGES[name.split(".")[1]]
        require(bool(values), f"postprocess.{name}", "is empty; give at least one value")
        bad = [v for v in values if not isinstance(v, (int, float)) or v < low or (high is not None and v > high)]
        bounds = f"in [{low}, {high}]" if high is not None else f">= {low}"
        require(not bad, f"postprocess.{name}", f"must be numbers {bounds}, got {bad}")


# ---- with the data or a checkpoint ------------------------------------------------------------------------------

def check_training_data(cfg: Any, train_set: SegmentationSet) -> None:
    """The training slices against the options that read them: crops that fit, class weights and Dice classes of
    the classes the data declares."""
    check_crop_fits(train_set, cfg.trainer.crop_size)
    check_class_weights(cfg.loss.fn.get("class_weights"), train_set.classes)
    check_dice_classes(cfg.loss.fn.get("dice_classes"), train_set.classes)


def check_class_weights(setting: Any, classes: Classes) -> None:
    """loss.fn.class_weights must be null, `balanced` or one weight >= 0 per class."""
    if setting is None or setting == "balanced":
        return
    weights = list(setting) if not isinstance(setting, str) else None
    if weights is None or len(weights) != classes.count or not all(
            isinstance(w, (int, float)) and w >= 0 for w in weights):
        raise ConfigError(f"loss.fn.class_weights={setting}: give `balanced` or {classes.count} weights >= 0, one per "
                          f"class of data.classes {list(classes.names)}")


def check_dice_classes(names: Sequence[str] | None, classes: Classes) -> None:
    """loss.fn.dice_classes must name classes of data.classes."""
    unknown = [n for n in names or () if n not in classes.names]
    if unknown:
        raise ConfigError(f"loss.fn.dice_classes={list(names)}: {unknown} not in data.classes {list(classes.names)}")


def check_crop_fits(data: SegmentationSet, crop_size: int) -> None:
    """Raises DataError naming the first training image smaller than the crop."""
    for name, image in zip(data.names, data.images):
        if min(image.shape[:2]) < crop_size:
            raise DataError(f"{name}: image is {image.shape[1]}x{image.shape[0]}, smaller than trainer.crop_size="
                            f"{crop_size}; lower trainer.crop_size to at most {min(image.shape[:2])}")


def check_checkpoint_classes(data: SegmentationSet, run: RunDir | None, ckpt: str) -> None:
    """The data's classes must be those the checkpoint's run trained on: the same names in the same order for K
    classes; any two classes for a two-class run (ISBI's membrane/cell scores binary folder data as before)."""
    saved = run.saved_config() if run else None
    if saved is None or "data" not in saved:
        return
    trained = parse_classes(saved.data.get("classes"), saved.data.get("ignore"))
    if trained.binary and data.classes.binary:  # one probability of class 1 either way, whatever the names
        return
    if trained.names != data.classes.names:
        raise ConfigError(f"ckpt={ckpt}: trained on classes {list(trained.names)}, but data '{data.name}' declares "
                          f"{list(data.classes.names)}; set data.classes to the same list, in the same order")


def check_outputs(outputs: int, classes: Classes, ckpt: str, target: Target) -> None:
    """The model must have one output per class of the data (one for binary); an affinity model needs data of two
    fully labelled classes."""
    if target.affinities:
        if not classes.topology:
            raise ConfigError(f"ckpt={ckpt}: an affinity model segments objects of two fully labelled classes, but "
                              f"the data declares {list(classes.names)}" + (" with unlabelled pixels" if classes.binary
                                                                            else "") + "; score it on such data")
        return
    if outputs != classes.outputs:
        raise ConfigError(f"ckpt={ckpt}: the model predicts {outputs} output(s), but the data's "
                          f"{classes.count} classes {list(classes.names)} need {classes.outputs}; "
                          "evaluate it on data with the classes it was trained on")


def check_bioimageio_run(saved: DictConfig | None, ckpt: str) -> None:
    """A run whose input a bioimage.io package cannot describe as segexp prepares it: no run folder to read how,
    normalization other than by the pixel type, slices resized for training."""
    if saved is None:
        raise ConfigError(f"format=bioimageio: ckpt={ckpt} has no run folder (config.yaml, split.json) beside it; "
                          "pass the run directory (or its MLflow run id)")
    if str(saved.data.get("normalize", "dtype")) != "dtype":
        raise ConfigError(f"format=bioimageio: the run normalized its images by {saved.data.normalize}, which this "
                          "export does not describe yet; export a run trained with data.normalize=dtype")
    if saved.data.get("resize") is not None:
        raise ConfigError(f"format=bioimageio: the run trained on slices resized to {list(saved.data.resize)}, which a "
                          "package's preprocessing cannot describe; export a run trained at the images' own size")


def check_prediction_outputs(node: DictConfig | None, run: RunDir | None, classes: Classes, target: Target,
                             save_affinities: bool) -> None:
    """predict's options that the checkpoint cannot serve: affinities to save from a boundary model; a
    segmentation stage (given, or the run's own) on a K-class checkpoint, whose stages segment binary boundary
    maps."""
    if save_affinities and not target.affinities:
        raise ConfigError("save_affinities=true: this checkpoint predicts a boundary map, not affinities; "
                          "leave save_affinities=false")
    if classes.outputs <= 1 or target.affinities:
        return
    method, _, _, _ = stages.configured(stages.of_run(node, run.saved_config() if run else None))
    if method != "none":
        raise ConfigError(f"postprocess={method} segments binary boundary maps; this checkpoint predicts "
                          f"{classes.count} classes; use postprocess=none")
