"""segexp's configs: files, schema, composition, instantiation and the pre-flight check.

One OmegaConf resolver lives here, so that every process that composes or reads a segexp config (the CLI, a
sweep's workers, tests) has it: `${segexp_monitor:${data.classes},${data.ignore}}`, trainer.monitor's default.
"""

from omegaconf import OmegaConf


def default_monitor(classes, ignore) -> str:
    """Returns the selection score checkpoints are chosen by unless trainer.monitor names one: the ISBI V_rand
    for two fully labelled classes (boundary maps, as before classes existed), the mean Dice over the classes
    for more classes or partly unlabelled masks, which have no topology scores."""
    return "select_v_rand" if (classes is None or len(classes) == 2) and ignore is None else "select_dice"


if not OmegaConf.has_resolver("segexp_monitor"):
    OmegaConf.register_new_resolver("segexp_monitor", default_monitor)
