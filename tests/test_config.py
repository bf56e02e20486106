"""Every option of every config group composes, validates and builds one training step; a mistake in
the config is one line from the CLI, in well under a second, before TensorFlow is imported; a new
component is a YAML file in a directory of the user's, and nothing else."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError, ValidationError

from conftest import SHALLOW, TINY, copy_store
from segexp.config.compose import compose
from segexp.config.files import config_groups
from segexp.config.instantiate import instantiate
from segexp.checks import check_train
from segexp.errors import ConfigError

ENV_CODE = "import os; os.environ['TF_CPP_MIN_LOG_LEVEL'] = '2'\n"
TRAIN_GROUPS = {g: opts for g, opts in config_groups().items() if g != "hparams_search"}
OPTIONS = [(g, o) for g, opts in TRAIN_GROUPS.items() for o in opts]


def default_choices() -> dict[str, str]:
    """Returns {group: option} that a tiny run picks without being told (train.yaml's defaults, TINY's debug)."""
    choices = compose("train", TINY, with_hydra=True).hydra.runtime.choices
    return {group: str(option) for group, option in choices.items() if not group.startswith("hydra")}


# Choosing an option a tiny run already picks trains the very same configuration: it is trained once, as
# "the defaults", rather than once per group (each training costs seconds of tracing).
DEFAULTS = default_choices()
# The postprocess stage runs after training and builds nothing in it: test_postprocess runs each option instead.
TRAINED_OPTIONS = [(g, o) for g, o in OPTIONS if DEFAULTS.get(g) != o and g != "postprocess"] + [("defaults", "")]


def option_overrides(group: str, option: str, folder_data) -> list[str]:
    images, masks = folder_data
    if (group, option) == ("data", "volume"):  # the same pairs as two TIFF stacks
        images, masks = (stack_folder(images, images.parent / "images.tif"),
                         stack_folder(masks, masks.parent / "masks.tif"))
    extra = [f"data.images={images}", f"data.masks={masks}", "split.select=[-2]",
             "split.report=[-1]"] if (group, option) in (("data", "folder"), ("data", "volume")) else []
    if (group, option) == ("postprocess", "mutex_watershed"):  # partitions affinities: refused on a boundary model
        extra.append("target=affinities")
    return [f"{group}={option}", *extra]


def stack_folder(folder: Path, stack: Path) -> Path:
    """Writes the folder's images, in name order, as one multi-page TIFF; returns its path."""
    import tifffile
    from PIL import Image

    tifffile.imwrite(stack, np.stack([np.asarray(Image.open(p)) for p in sorted(folder.iterdir())]))
    return stack


@pytest.mark.parametrize("group,option", OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_every_option_composes_and_validates(make_cfg, group, option, folder_data):
    cfg = make_cfg(*option_overrides(group, option, folder_data))
    check_train(cfg)
    if group not in ("experiment", "debug"):  # those are global recipes, not a key of their own
        assert OmegaConf.select(cfg, group.replace("/", ".")) is not None


def test_the_defaults_a_tiny_run_picks_are_real_options():
    assert set(DEFAULTS) >= {"model", "aug", "loss", "optimizer", "data", "split", "trainer", "tracking"}
    assert all(option in TRAIN_GROUPS[group] for group, option in DEFAULTS.items() if option != "None")
    assert DEFAULTS["debug"] == "smoke" and DEFAULTS["experiment"] == "None"


@pytest.mark.slow
@pytest.mark.parametrize("group,option", TRAINED_OPTIONS, ids=[f"{g}={o}" if o else g for g, o in TRAINED_OPTIONS])
def test_every_option_builds_and_trains_one_step(make_cfg, group, option, folder_data, empty_store):
    """timm-style: a new option file is tested by this code, built the way train() builds it."""
    chosen = option_overrides(group, option, folder_data) if option else []
    # an option outside the model (and outside the recipes that choose one) is built the same around any model:
    # the cheapest U-Net to trace (bench.training.TINY_MODEL's) carries it; the defaults train TINY's own model
    shallow = [] if group in ("model", "experiment", "defaults") else SHALLOW
    cfg = make_cfg(*TINY, "trainer.batch_size=1", *shallow, *chosen)
    if group in ("tracking", "defaults"):  # the tracker itself, for mlflow (a default) and none
        tracker = instantiate(cfg.tracking, uri=copy_store(empty_store, folder_data[0].parent / "mlflow.db"))
        with tracker.run("one step", {}):
            tracker.log_metrics({"x": 1.0})
    assert np.isfinite(train_one_step(cfg))


def train_one_step(cfg) -> float:
    """Returns the loss of one training step of the config, every piece built the way train() builds it."""
    from segexp.training.build import build_components, build_model, class_weights, fit, prepare_data, training_stream

    parts, weights = prepare_data(cfg)
    built = build_components(cfg)
    train_set = parts["train"]
    model = build_model(cfg, train_set.channels, train_set.foreground, built.schedule.learning_rate, False,
                        train_set.classes, class_weights(cfg.loss.fn.class_weights, train_set))
    affinities = cfg.target.kind == "affinities"
    assert model.output_shape[-1] == (len(cfg.target.offsets) if affinities else train_set.classes.outputs)
    stream = training_stream(cfg, train_set, weights, built.pipeline)
    return fit(cfg, model, stream, built.callbacks)["loss"][0]  # TINY: one epoch, its steps, no output


# the losses that make sense for more than two classes (border weights and clDice are two-class terms)
MULTI_CLASS_LOSSES = [o for o in TRAIN_GROUPS["loss"] if not o.startswith("weighted") and "cldice" not in o]


@pytest.mark.slow
@pytest.mark.parametrize("loss", MULTI_CLASS_LOSSES)
def test_every_multi_class_loss_trains_a_softmax_head_one_step(make_cfg, loss):
    cfg = make_cfg(*TINY, "trainer.batch_size=1", *SHALLOW, "data=shapes", "data.count=4", "data.size=48",
                   f"loss={loss}", "loss.fn.dice_classes=[disc,ring]" if "dice" in loss else "loss.fn.focal_gamma=1")
    assert np.isfinite(train_one_step(cfg))


def test_misspelled_key_fails_at_composition(make_cfg):
    with pytest.raises((ConfigCompositionException, ConfigKeyError)) as err:
        make_cfg("optimizer.lrr=0.1")
    assert "lrr" in str(err.value) or "lrr" in str(err.value.__cause__)


def test_wrong_type_fails_at_composition(make_cfg):
    with pytest.raises((ConfigCompositionException, ValidationError)):
        make_cfg("trainer.epochs=many")


def test_unknown_option_lists_the_choices(make_cfg):
    with pytest.raises(ConfigCompositionException) as err:
        make_cfg("model=resnet")
    assert "unet_small" in str(err.value)


@pytest.mark.parametrize("override,key", [
    ("optimizer.lr=0", "optimizer.lr"), ("optimizer.lr=-1e-3", "optimizer.lr"),
    ("trainer.epochs=0", "trainer.epochs"), ("model.depth=0", "model.depth"),
    ("trainer.batch_size=0", "trainer.batch_size"), ("model.dropout=1.0", "model.dropout"),
    ("model.dropout=-0.1", "model.dropout"), ("trainer.topology_metrics=false", "trainer.monitor"),
    ("data.resize=[0,5]", "data.resize"), ("objective=report_v_rand", "objective"),
    ("loss.fn.cldice=-0.5", "loss.fn.cldice"), ("loss.fn.dice=-1", "loss.fn.dice"),
    ("loss.fn.skeleton_iterations=0", "loss.fn.skeleton_iterations"),
])
def test_invalid_values_name_the_key(make_cfg, override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        check_train(make_cfg(override))


def cli(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "segexp", *args], capture_output=True, text=True, timeout=300,
                          cwd=cwd)


# one bad choice per group (and per closed set of values), with what the one line must name
BAD_CHOICES = [
    ("model=resnet", "model=resnet: no such option; choose one of unet, unet_deep, unet_small"),
    ("aug=extreme", "aug=extreme: no such option; choose one of heavy, light, none, seed"),
    ("loss=hinge", "loss=hinge: no such option; choose one of bce, bce_dice, bce_dice_cldice, ce_dice_balanced, dice, "
                   "focal, focal_dice, weighted_bce, weighted_bce_dice"),
    ("optimizer=lion", "optimizer=lion: no such option; choose one of adam, adamw, sgd"),
    ("optimizer/schedule=linear", "optimizer/schedule=linear: no such option; choose one of constant, cosine, "
                                  "plateau, warmup_cosine"),
    ("data=coco", "data=coco: no such option; choose one of folder, isbi2012, shapes, synthetic, volume"),
    ("split=kfold", "split=kfold: no such option; choose one of holdout"),
    ("target=edges", "target=edges: no such option; choose one of affinities, boundary"),
    ("target.kind=edges", "target.kind: Invalid value 'edges', choose one of boundary, affinities"),

    ("trainer=fast", "trainer=fast: no such option; choose one of default"),
    ("tracking=wandb", "tracking=wandb: no such option; choose one of mlflow, none"),
    ("callbacks=tensorboard", "callbacks=tensorboard: no such option; choose one of default, early_stop"),
    ("experiment=best", "experiment=best: no such option; choose one of isbi_affinities, isbi_best, isbi_quick, "
                        "seed_replica"),
    ("debug=tiny", "debug=tiny: no such option; choose one of smoke"),
    ("inference=fast", "inference=fast: no such option; choose one of default"),
    ("postprocess=graphcut", "postprocess=graphcut: no such option; choose one of agglomerate, gasp, multicut, "
                             "mutex_watershed, none, watershed"),
    ("model.upsampling=pixelshuffle", "model.upsampling: Invalid value 'pixelshuffle', choose one of transpose, "
                                      "bilinear, upsample_conv"),
    ("trainer.precision=fp8", "trainer.precision: Invalid value 'fp8', choose one of float32, mixed_bfloat16, "
                              "mixed_float16, auto"),
    ("trainer.strategy=horovod", "trainer.strategy: Invalid value 'horovod', choose one of default, mirrored, "
                                 "multi_worker_mirrored"),
    ("trainer.checkpoint=median", "trainer.checkpoint: Invalid value 'median', choose one of best, last"),
    ("trainer.monitor_mode=up", "trainer.monitor_mode: Invalid value 'up', choose one of max, min"),
    ("data.normalize=zscore", "data.normalize: Invalid value 'zscore', choose one of dtype, percentile"),
]


def errors_without_tensorflow(tmp_path, command: list[str], cases: list[str]) -> tuple[list[str], list[str]]:
    """Runs `segexp <command> <case>` for each case in one fresh Python process, which must not import
    TensorFlow or Keras; returns (the stderr line of each case, each case's "EXIT <code>")."""
    code = ENV_CODE + (
        "import sys; from segexp.__main__ import main\n"
        f"for case in {cases!r}:\n"
        f"    try:\n        main([*{command!r}, case])\n    except SystemExit as exit:\n"
        "        print('EXIT', exit.code, file=sys.stderr)\n"
        "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules, 'heavy import'\n"
        "print('CLEAN')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert "CLEAN" in out.stdout, out.stderr
    lines = out.stderr.strip().splitlines()
    return lines[0::2], lines[1::2]


def test_cfg_job_rejects_a_bad_choice_in_every_group_in_one_line_without_tensorflow(tmp_path):
    groups = {bad.split("=")[0].split(".")[0] for bad, _ in BAD_CHOICES}
    assert set(TRAIN_GROUPS) <= groups, "a new config group needs a bad-choice case here"
    messages, exits = errors_without_tensorflow(tmp_path, ["train", "--cfg", "job"], [bad for bad, _ in BAD_CHOICES])
    assert messages == [f"segexp: error: {expected}" + ("" if "no such option" in expected else
                                                        "; `segexp train --cfg job` shows the composed config")
                        for _, expected in BAD_CHOICES]
    assert exits == ["EXIT 2"] * len(BAD_CHOICES)  # how fast: bench.startup times `train --cfg job` with a bad choice


NODE_MISTAKES = [  # a value typed where the config holds a node, and a key of an option not selected
    ("optimizer.schedule=cosine", "optimizer.schedule=cosine: optimizer/schedule is a config group; write "
     "optimizer/schedule=cosine (options: constant, cosine, plateau, warmup_cosine)"),
    ("optimizer.fn=adam", "optimizer.fn=adam: optimizer.fn is a `_target_` node (keras.optimizers.Adam), not a "
     "value; choose another option of its group, optimizer=OPTION (options: adam, adamw, sgd), or set its keys"),
    ("callbacks.early_stop.patience=3", "callbacks.early_stop.patience=3: callbacks.early_stop.patience belongs to "
     "callbacks=early_stop, which is not selected; add callbacks=early_stop to set it"),
]


def test_a_value_for_a_config_node_and_a_key_of_an_unselected_option_end_in_one_line_without_tensorflow(tmp_path):
    messages, exits = errors_without_tensorflow(tmp_path, ["train"], [bad for bad, _ in NODE_MISTAKES])
    assert messages == [f"segexp: error: {expected}" for _, expected in NODE_MISTAKES]
    assert exits == ["EXIT 2"] * len(NODE_MISTAKES)


def test_the_right_spelling_of_each_node_mistake_composes(make_cfg):
    cfg = make_cfg("optimizer/schedule=cosine", "optimizer=adamw", "callbacks=early_stop",
                   "callbacks.early_stop.patience=3")
    assert cfg.callbacks.early_stop.patience == 3 and cfg.optimizer.fn._target_ == "keras.optimizers.AdamW"
    assert cfg.optimizer.schedule._target_.endswith(".cosine")


def test_a_monitor_whose_default_is_an_interpolation_is_overridden_through_the_preflight(tmp_path):
    # trainer/default.yaml sets monitor to ${segexp_monitor:...}, which only the composed config resolves: the
    # preflight used to resolve it from the file alone and ended in a traceback
    out = cli("train", "--cfg", "job", "trainer.monitor=select_dice", cwd=tmp_path)
    assert out.returncode == 0 and "monitor: select_dice" in out.stdout, out.stderr
    messages, exits = errors_without_tensorflow(tmp_path, ["train", "--cfg", "job"], ["trainer.monitor=select_dcie"])
    assert messages == ["segexp: error: trainer.monitor: select_dcie is no metric of an epoch; choose one of accuracy, "
                        "dice, dice_cell, dice_membrane, iou, iou_cell, iou_membrane, loss, select_accuracy, "
                        "select_dice, select_dice_cell, select_dice_membrane, select_iou, select_iou_cell, "
                        "select_iou_membrane, select_loss, select_v_info, select_v_rand"] and exits == ["EXIT 2"]


def test_a_sweep_value_is_checked_too(tmp_path):
    out = cli("train", "-m", "--cfg", "job", "optimizer.lr=1e-4,0", cwd=tmp_path)
    assert out.returncode == 2 and out.stderr.strip() == "segexp: error: optimizer.lr: must be > 0 and finite, got 0.0"


def test_help_and_cfg_do_not_import_tensorflow(tmp_path):
    code = ENV_CODE + ("import sys; from segexp.__main__ import main\n"
                       "try:\n    main(['train', '--cfg', 'job', 'model=unet'])\nexcept SystemExit: pass\n"
                       "main(['--help'])\n"
                       "assert 'tensorflow' not in sys.modules and 'mlflow' not in sys.modules, 'heavy import'\n"
                       "print('CLEAN')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert "CLEAN" in out.stdout, out.stderr
    assert "base_filters: 64" in out.stdout  # model=unet was composed
    assert "config groups" in out.stdout and "optimizer/schedule" in out.stdout


def test_help_into_a_closed_pipe_ends_quietly(tmp_path):
    """`segexp --help | head` must not end in a traceback when the reader leaves first."""
    reader_gone = subprocess.Popen([sys.executable, "-m", "segexp", "--help"], stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, cwd=tmp_path)
    reader_gone.stdout.close()  # before the CLI writes a byte (its interpreter is still starting)
    err = reader_gone.stderr.read().decode()
    assert reader_gone.wait(timeout=60) == 1 and "Traceback" not in err and "BrokenPipe" not in err, err


USER_CONF = {
    # a new optimizer, a new schedule and a new callback: three YAML files, no Python
    "optimizer/lion.yaml": """
defaults:
  - schedule: constant
  - _self_
lr: 3.0e-4
fn:
  _target_: keras.optimizers.Lion
  weight_decay: 0.0
""",
    "optimizer/schedule/exp_decay.yaml": """
_target_: segexp.training.schedules.Schedule
learning_rate:
  _target_: keras.optimizers.schedules.ExponentialDecay
  initial_learning_rate: ${optimizer.lr}
  decay_steps: ${trainer.steps_per_epoch}
  decay_rate: 0.5
""",
    "callbacks/csv_log.yaml": """
csv_log:
  _target_: keras.callbacks.CSVLogger
  filename: ${hydra:runtime.output_dir}/epochs.csv
""",
}


@pytest.mark.slow
def test_a_component_is_added_by_dropping_yaml_files_into_a_config_dir(tmp_path):
    conf = tmp_path / "my_conf"
    for relative, text in USER_CONF.items():
        (conf / relative).parent.mkdir(parents=True, exist_ok=True)
        (conf / relative).write_text(text.lstrip())
    run_dir = tmp_path / "run"
    out = cli("train", "--config-dir", str(conf), "optimizer=lion", "optimizer/schedule=exp_decay",
              "callbacks=csv_log", *TINY, *SHALLOW, "data=synthetic", "data.size=48", "trainer.epochs=2",
              "tracking=none", f"hydra.run.dir={run_dir}",
              cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = (run_dir / "epochs.csv").read_text().strip().splitlines()
    assert len(rows) == 3 and "select_v_rand" in rows[0]  # header + one row per epoch, selection scores in it
    saved = (run_dir / "config.yaml").read_text()
    assert "keras.optimizers.Lion" in saved and "ExponentialDecay" in saved
    # and a typo in the user's own file is one line, like any other
    (conf / "optimizer" / "lion.yaml").write_text(USER_CONF["optimizer/lion.yaml"].replace("lr:", "lrate:"))
    out = cli("train", "--config-dir", str(conf), "optimizer=lion", "--cfg", "job", cwd=tmp_path)
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1 and "lrate" in out.stderr


def test_preflight_leaves_a_sweepers_own_ranges_to_the_sweeper():
    from segexp.__main__ import check_command_line

    # interval() and glob() have no list of values to compose; the sweeper draws them
    check_command_line("train", ["hparams_search=optuna", "optimizer.lr=tag(log,interval(1e-4,1e-3))",
                                 "loss=glob(bce*)"], multirun=True)
    with pytest.raises(ConfigError, match=r"optimizer\.lr: must be > 0 and finite"):
        check_command_line("train", ["optimizer.lr=1e-4,inf"], multirun=True)


def test_the_command_line_accepts_flag_values_after_an_equals_sign():
    from segexp.__main__ import split_argv

    assert split_argv(["--config-dir=/c", "-m", "a=1", "--cfg", "job", "-cd", "/d", "b=2,3"]) == (
        ["a=1", "b=2,3"], [Path("/c"), Path("/d")], True, False)
    assert split_argv(["--config-name=mine", "a=1"])[3] is True  # the user's own config: Hydra checks it
