"""Typed schemas for every config group, registered in Hydra's ConfigStore.

Hydra merges the YAML files in conf/ into these dataclasses, so a misspelled key or a
value of the wrong type fails at composition time, before TensorFlow is even imported.
Value ranges and keys that must agree (lr > 0, a monitor the epoch logs, ...) are checked by segexp.checks,
also before any work.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING



# Closed sets of choices: OmegaConf rejects any other value while composing, naming the key and
# the allowed values, before TensorFlow is imported. StrEnum members compare equal to their strings.
class Upsampling(StrEnum):
    transpose = "transpose"
    bilinear = "bilinear"
    upsample_conv = "upsample_conv"


class Precision(StrEnum):
    float32 = "float32"
    mixed_bfloat16 = "mixed_bfloat16"
    mixed_float16 = "mixed_float16"
    auto = "auto"


class Normalization(StrEnum):
    dtype = "dtype"
    percentile = "percentile"


class OutputFormat(StrEnum):
    auto = "auto"  # zarr for an array (TIFF, HDF5, Zarr) whose slices are larger than stream_megapixels, else png
    png = "png"  # each image predicted in memory, written as PNG files
    zarr = "zarr"  # read, predicted and written a row band of tiles at a time: <output>/<stem>.zarr


class Strategy(StrEnum):
    default = "default"
    mirrored = "mirrored"
    multi_worker_mirrored = "multi_worker_mirrored"


class CheckpointChoice(StrEnum):
    best = "best"
    last = "last"


class PostprocessMethod(StrEnum):
    none = "none"
    watershed = "watershed"
    agglomerate = "agglomerate"
    multicut = "multicut"
    gasp = "gasp"
    mutex_watershed = "mutex_watershed"


class LabelKind(StrEnum):
    mask = "mask"  # binary or class indices, read as data=folder reads mask files (data.classes)
    instances = "instances"  # object ids, 0 = boundary/background: the boundary mask is derived from them


class TargetKind(StrEnum):
    boundary = "boundary"
    affinities = "affinities"


class Mode(StrEnum):
    max = "max"
    min = "min"


@dataclass
class ModelConfig:
    # values: conf/model/*.yaml (one place for defaults); the types here
    _target_: str = "segexp.models.unet.build_unet"
    depth: int = MISSING
    base_filters: int = MISSING
    batch_norm: bool = MISSING
    # batch norm trained through TensorFlow's fused kernel (Keras' arithmetic, faster); conf/model sets true, and
    # false here is what a run saved before the key existed used (Keras' layer), so it resumes and reproduces as it ran
    fused_batch_norm: bool = False
    dropout: float = MISSING
    dropout_levels: int = MISSING  # dropout applies to this many deepest levels
    upsampling: Upsampling = MISSING
    activation: str = MISSING
    head_filters: int = MISSING  # >0: an extra 3x3 conv before the 1x1 classifier (the seed has 2)


@dataclass
class LossFnConfig:
    # values: conf/loss/*.yaml
    _target_: str = "segexp.models.losses.SegmentationLoss"
    bce: float = MISSING
    dice: float = MISSING
    focal_gamma: float = MISSING
    foreground: int = MISSING  # mask value the Dice and clDice terms are computed on (0 = membrane)
    cldice: float = 0.0  # weight of soft clDice (topology of the foreground's centrelines); 0: off
    skeleton_iterations: int = 10  # clDice's soft skeleton thins structures up to 2x this many pixels thick
    # per-class weights of the cross-entropy, in data.classes order, or `balanced` (n / (K * n_c) from the
    # training masks); null: all 1
    class_weights: Optional[Any] = None
    dice_classes: Optional[List[str]] = None  # K > 2 classes: Dice averaged over these class names; null: all


@dataclass
class WeightMapConfig:
    """U-Net paper border weights: w = w_class + w0 * exp(-(d1 + d2)^2 / (2 sigma^2)); built as a
    function mask -> weights (`_partial_`), applied to every training mask."""

    _target_: str = "segexp.data.weightmap.border_weight_map"
    _partial_: bool = True
    w0: float = MISSING
    sigma: float = MISSING
    class_balance: bool = MISSING


@dataclass
class LossConfig:
    fn: LossFnConfig = field(default_factory=LossFnConfig)
    weight_map: Optional[WeightMapConfig] = None


@dataclass
class OptimizerConfig:
    """The optimizer and its learning-rate schedule, each a `_target_` node the composition root
    builds: `schedule` (conf/optimizer/schedule/) gives the rate, `fn` is the Keras optimizer
    built with it. `lr` stays a key of its own, so `optimizer.lr=...` sweeps every optimizer."""

    lr: float = MISSING
    fn: Any = MISSING  # {_target_: keras.optimizers.X, ...}: built with learning_rate=<the schedule's rate>
    schedule: Any = MISSING  # {_target_: a function returning schedules.Schedule, ...}
    # null: off; e.g. 0.99: the optimizer keeps an exponential moving average of the weights (Keras use_ema), and
    # the selection scores, checkpoints and saved model use it (keras.callbacks.SwapEMAWeights)
    ema: Optional[float] = None


@dataclass
class AugConfig:
    _target_: str = "albumentations.Compose"  # the pipeline, built once by the composition root
    transforms: List[Any] = MISSING  # albumentations transforms, each a {_target_: albumentations.X, ...} node


@dataclass
class DataConfig:
    _target_: str = MISSING
    name: str = MISSING
    channels: Optional[int] = None  # None: inferred from the first image
    normalize: Normalization = Normalization.dtype
    foreground: int = 0  # binary data: the class that `dice`/`iou` score (0 = membrane in ISBI)
    mask_threshold: Optional[int] = None  # binarize non-binary masks at this value
    # class names in index order ([background, nucleus, membrane]: mask value i is class i), or entries
    # {name: road, value: [128, 64, 128]} / {name: nucleus, value: 2}; null: two classes, masks 0/1 or 0/255
    classes: Optional[List[Any]] = None
    ignore: Optional[Any] = None  # mask value (or [r, g, b]) of unlabelled pixels: no loss, no score
    resize: Optional[List[int]] = None  # [height, width] to resize every slice to at load time
    # contiguous-block cross-validation: fold i reports block i and selects on block i-1 (replaces split.*)
    folds: Optional[int] = None
    fold: Optional[int] = None


@dataclass
class Isbi2012DataConfig(DataConfig):
    _target_: str = "segexp.data.datasets.load_isbi2012"
    name: str = "isbi2012"
    root: Optional[str] = None
    verify: bool = True


@dataclass
class FolderDataConfig(DataConfig):
    _target_: str = "segexp.data.datasets.load_folder"
    name: str = "folder"
    images: str = MISSING
    masks: str = MISSING
    foreground: int = 1


@dataclass
class VolumeDataConfig(DataConfig):
    # an image volume and its labels, each a multi-page TIFF, an HDF5 file or a Zarr array/group; z is the slice axis
    _target_: str = "segexp.data.datasets.load_volume"
    name: str = "volume"
    images: str = MISSING
    masks: str = MISSING
    images_key: Optional[str] = None  # the dataset in an HDF5 file / array in a Zarr group (null: its only one)
    masks_key: Optional[str] = None
    labels: LabelKind = LabelKind.mask


@dataclass
class SyntheticDataConfig(DataConfig):
    _target_: str = "segexp.data.datasets.make_synthetic"
    name: str = "synthetic"
    count: int = 12
    size: int = 128
    cells: int = 40
    seed: int = 0


@dataclass
class ShapesDataConfig(DataConfig):
    _target_: str = "segexp.data.datasets.make_shapes"
    name: str = "shapes"
    count: int = 16
    size: int = 96
    shapes: int = 12
    seed: int = 0
    foreground: int = 1


@dataclass
class SplitConfig:
    """Three disjoint roles for the labelled slices, by position in sorted order (negative from the end).

    `select` is all that any choice may look at (best checkpoint, early stopping, plateau schedule,
    sweep objective); `report` is scored once, at the end, on the chosen checkpoint; training uses
    every other slice. Contiguous blocks, since adjacent EM sections are correlated.
    """

    select: List[int] = MISSING
    report: List[int] = MISSING


@dataclass
class TrainerConfig:
    # values: conf/trainer/default.yaml (one place for defaults); the types here
    epochs: int = MISSING
    steps_per_epoch: int = MISSING
    batch_size: int = MISSING
    crop_size: int = MISSING
    seed: int = MISSING
    deterministic: bool = MISSING
    precision: Precision = MISSING
    checkpoint: CheckpointChoice = MISSING  # best: by `monitor` on the selection slices; last: the final epoch
    monitor: str = MISSING
    monitor_mode: Mode = MISSING
    max_minutes: Optional[float] = MISSING  # wall-clock budget: stop training (mid-epoch) once it is spent
    preview_slices: int = MISSING  # selection slices drawn into the per-epoch mask image
    aug_preview: int = MISSING  # first training samples (augmented crop, mask) logged as one image at the start
    topology_metrics: bool = MISSING  # V_rand / V_info on the selection slices every epoch
    aug_workers: int = MISSING  # tf.data parallel calls; -1 = AUTOTUNE
    jit_compile: Any = MISSING  # true, false or auto (timed per machine: speed_probe)
    speed_cache: Optional[str] = MISSING  # where auto's timings are cached; None: probe every run
    strategy: Strategy = MISSING  # tf.distribute
    verbose: Optional[int] = MISSING  # null: a progress bar on a terminal, one line per epoch otherwise


@dataclass
class TrackingConfig:
    _target_: str = MISSING  # segexp.tracking.trackers.MlflowTracker or NullTracker (conf/tracking/)
    uri: Optional[str] = MISSING  # None: sqlite:///<cwd>/outputs/mlflow.db (or $MLFLOW_TRACKING_URI)
    experiment_name: str = MISSING
    log_model: bool = MISSING
    system_metrics: Optional[float] = MISSING  # seconds between system-metric samples (psutil); None: off
    register_as: Optional[str] = MISSING  # registered model name for each run's model (None: not registered)
    outage_wait: float = MISSING  # seconds a run's end waits for an unreachable store before leaving the rest to upload


@dataclass
class TargetConfig:
    # values: conf/target/*.yaml; what the network predicts (src/segexp/data/affinities.py)
    kind: TargetKind = TargetKind.boundary
    offsets: List[List[int]] = field(default_factory=list)  # affinities: one output channel per [dy, dx]


@dataclass
class TrainConfig:
    model: ModelConfig = MISSING
    loss: LossConfig = MISSING
    optimizer: OptimizerConfig = MISSING
    aug: AugConfig = MISSING
    data: Any = MISSING
    split: SplitConfig = MISSING
    trainer: TrainerConfig = MISSING
    tracking: TrackingConfig = MISSING
    callbacks: Dict[str, Any] = field(default_factory=dict)  # extra Keras callbacks: {name: _target_ node}
    inference: "InferenceConfig" = MISSING  # how the report slices are predicted at the end, as evaluate does
    postprocess: "PostprocessConfig" = MISSING  # the segmentation stage after the network (conf/postprocess/)
    target: TargetConfig = field(default_factory=TargetConfig)  # what the network predicts (conf/target/)
    objective: str = "select_v_rand"  # metric the Hydra entry point returns to sweepers: a selection score
    run_name: Optional[str] = None  # None: made from the command-line overrides
    resume: Optional[str] = None  # a run directory or MLflow run id to continue
    resume_sweep: bool = False  # this multirun continues the sweep in hydra.sweep.dir (see sweep.py)
    pruner: Optional[Any] = None  # an optuna.pruners node: with hparams_search=optuna, stop hopeless trials early
    optuna_trial: Optional[int] = None  # set by optuna_sweeper.PruningOptunaSweeper: this job's trial number


@dataclass
class InferenceConfig:
    # values: conf/inference/default.yaml, shared by predict and evaluate
    tile: int = MISSING  # largest tile: images up to tile - overlap go through in one pass
    overlap: int = MISSING
    batch_size: int = MISSING
    tta: bool = MISSING  # average over the 8 flips/rotations
    threshold: float = MISSING
    # [height, width] the model sees; the probabilities go back to each image's own size. null: the
    # training run's data.resize when the checkpoint's run directory records one, else native size
    resize: Optional[List[int]] = MISSING


@dataclass
class PostprocessConfig:
    # values: conf/postprocess/*.yaml; the segmentation stage after the network (postprocessing/)
    method: PostprocessMethod = MISSING
    # null: train chooses the parameters on its selection slices, evaluate and predict reuse the run's choice;
    # true: choose on the run's selection slices again; false: take `params` as given
    tune: Optional[bool] = None
    params: Dict[str, Any] = field(default_factory=dict)  # used with tune=false (and shown as the default)
    grid: Dict[str, List[Any]] = field(default_factory=dict)  # the values the choice tries, every combination


@dataclass
class PredictConfig:
    ckpt: str = MISSING  # model.keras, a run directory, or an MLflow run id
    input: str = MISSING  # an image file, a directory of images, or a volume (multi-page TIFF, HDF5, Zarr)
    input_key: Optional[str] = None  # the dataset inside an HDF5 file or Zarr group (null: its only one)
    output: str = MISSING
    inference: InferenceConfig = MISSING
    normalize: Normalization = Normalization.dtype
    postprocess: Optional[PostprocessConfig] = None  # None: the checkpoint run's stage, with the parameters it chose
    save_mask: bool = True
    save_overlay: bool = False
    save_affinities: bool = False  # an affinity checkpoint: <stem>_affinities.tif, one float32 page per offset
    output_format: OutputFormat = OutputFormat.auto  # png, or zarr for images larger than memory
    stream_megapixels: float = 64.0  # output_format=auto streams to Zarr a slice of more megapixels than this


@dataclass
class EvaluateConfig:
    ckpt: str = MISSING
    data: Any = None  # None: the data the checkpoint's run trained on
    tracking: TrackingConfig = MISSING
    # slices to score, by position (negative from the end); null: the training run's report slices
    # when `data` holds them, else every slice of `data` the checkpoint never saw
    slices: Optional[List[int]] = None
    allow_seen: bool = False  # score slices the checkpoint trained or was selected on (keys eval_seen_*)
    inference: InferenceConfig = MISSING
    postprocess: Optional[PostprocessConfig] = None  # None: the checkpoint run's stage, with the parameters it chose
    log_images: int = 5  # prediction panels logged to MLflow


@dataclass
class CompareConfig:
    runs: List[str] = MISSING  # MLflow run ids or run / sweep directories; the first is the baseline A
    metrics: List[str] = MISSING  # final metrics compared (report_* : scored where no choice looked)
    curves: List[str] = MISSING  # per-epoch metrics overlaid
    target_difference: Optional[float] = None  # a difference to plan for: how many pairs would detect it
    # metric-name suffixes: each recipe once per suffix, e.g. variants=[_tta,_tta_watershed] with
    # metrics=[eval_v_rand] compares two `segexp evaluate` runs of the same checkpoints, paired
    variants: List[str] = field(default_factory=lambda: [""])
    tracking: TrackingConfig = MISSING


class ExportFormat(StrEnum):
    onnx = "onnx"
    saved_model = "saved_model"
    litert = "litert"
    bioimageio = "bioimageio"


@dataclass
class PackageConfig:
    """What a bioimage.io package (format=bioimageio) says about itself beyond what the run records."""

    name: Optional[str] = None  # None: "segexp U-Net <data> <output>"
    authors: List[str] = MISSING
    license: str = MISSING  # an SPDX identifier
    tags: List[str] = MISSING


@dataclass
class ExportConfig:
    ckpt: str = MISSING  # model.keras, a run directory, or an MLflow run id
    format: ExportFormat = MISSING
    output: str = MISSING
    size: Optional[List[int]] = None
    tolerance: float = MISSING
    package: PackageConfig = MISSING


@dataclass
class ReproduceConfig:
    run: str = MISSING  # an MLflow run id or a run directory
    tracking: TrackingConfig = MISSING


@dataclass
class OrphansConfig:
    tracking: TrackingConfig = MISSING


@dataclass
class UploadConfig:
    run: str = MISSING  # a run or sweep directory, or any folder above them
    uri: Optional[str] = None  # None: each run's own store, from its journal


def register_configs() -> None:
    """Register the schemas so YAML files can extend them by name."""
    cs = ConfigStore.instance()
    cs.store(name="train_schema", node=TrainConfig)
    cs.store(name="predict_schema", node=PredictConfig)
    cs.store(name="evaluate_schema", node=EvaluateConfig)
    cs.store(name="compare_schema", node=CompareConfig)
    cs.store(name="export_schema", node=ExportConfig)
    cs.store(name="reproduce_schema", node=ReproduceConfig)
    cs.store(name="orphans_schema", node=OrphansConfig)
    cs.store(name="upload_schema", node=UploadConfig)
    cs.store(group="data", name="isbi2012_schema", node=Isbi2012DataConfig)
    cs.store(group="data", name="folder_schema", node=FolderDataConfig)
    cs.store(group="data", name="volume_schema", node=VolumeDataConfig)
    cs.store(group="data", name="synthetic_schema", node=SyntheticDataConfig)
    cs.store(group="data", name="shapes_schema", node=ShapesDataConfig)
