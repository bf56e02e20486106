"""What the pixel targets ask of a prediction: the annotation itself, its membranes moved by a pixel or two,
scored as if it were a prediction of the report slices.

    python -m studies.label_tolerance            # ISBI report slices 25-29: seconds
    python -m studies.label_tolerance --quick    # 64x64 crops: the script only

A prediction whose every membrane boundary sits one pixel off the annotation is, for a person, a perfect
tracing; the pixel scores (membrane Dice, accuracy) charge it heavily, the segment scores (V_rand, V_info) hardly
at all. This puts figures on both, so a Dice or accuracy target can be read as "boundaries within n pixels".
"""

from __future__ import annotations

import sys
from typing import Any, Callable, Sequence

import numpy as np

from bench import common, render
from studies import metric_agreement

NAME = "label_tolerance"
TITLE = "Label tolerance: the annotation, its membranes moved by a pixel or two, scored as a prediction"
METHOD = ("Each report slice's annotation (membrane = black) is altered and scored against itself as a prediction "
          "(cell probability 1 where the altered map says cell, 0 on membrane) by segexp.evaluation.metrics, as "
          "`segexp evaluate` scores a model: V_rand/V_info over the reference's thresholds, averaged per slice; "
          "membrane Dice and pixel accuracy pooled over the slices. Dilation and erosion use scipy.ndimage's "
          "4-connected cross (one step moves every boundary a pixel); a shift moves the whole map, repeating "
          "its edge: a horizontal shift leaves horizontal membranes where they were, a diagonal one moves every "
          "boundary.")


# whole slices, or 64x64 crops with --quick: the sizes metric_agreement scores
FULL, QUICK = metric_agreement.FULL, metric_agreement.QUICK


def alterations() -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    """Returns {name: membrane mask -> altered membrane mask}."""
    from scipy import ndimage

    return {
        "the annotation itself": lambda m: m,
        "each boundary 1 px outward (membranes 2 px wider)": lambda m: ndimage.binary_dilation(m),
        "each boundary 1 px inward (membranes 2 px thinner)": lambda m: ndimage.binary_erosion(m),
        "each boundary 2 px outward (membranes 4 px wider)": lambda m: ndimage.binary_dilation(m, iterations=2),
        "each boundary 2 px inward (membranes 4 px thinner)": lambda m: ndimage.binary_erosion(m, iterations=2),
        "shifted 1 px right": lambda m: shifted(m, 0, 1),
        "shifted 1 px right and 1 px down": lambda m: shifted(m, 1, 1),
        "shifted 2 px right": lambda m: shifted(m, 0, 2),
        "shifted 2 px right and 2 px down": lambda m: shifted(m, 2, 2),
    }


def shifted(mask: np.ndarray, down: int, right: int) -> np.ndarray:
    """Returns the mask moved down and right, the first rows and columns repeating the edge (not wrapping around:
    the far edge's membranes at the near one would merge the cells along it)."""
    return np.pad(mask, ((down, 0), (right, 0)), mode="edge")[:mask.shape[0], :mask.shape[1]]


def report_truths(crop: int | None) -> tuple[list[np.ndarray], list[str]]:
    """Returns the default split's report slices' annotations (at the labels' resolution) and their names."""
    from segexp.config.compose import compose
    from segexp.data.datasets import load
    from segexp.data.splits import resolve_indices

    cfg = compose("train")
    data = load(cfg.data, at_labels=True)
    window = (slice(0, crop), slice(0, crop)) if crop else (slice(None), slice(None))
    indices = resolve_indices(list(cfg.split.report), len(data.masks), "split.report")
    return [np.asarray(data.masks[i])[window] for i in indices], [data.names[i] for i in indices]


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args, settings, result = common.begin(NAME, TITLE, METHOD, argv, FULL, QUICK, package="studies")
    result["command"] = common.command_line(NAME, list(argv) if argv is not None else sys.argv[1:], package="studies")
    from segexp.evaluation.metrics import cell_mask_from_truth, evaluate_slices

    truths, names = report_truths(settings.crop)
    rows = []
    for name, alter in alterations().items():
        probs = [(~alter(~cell_mask_from_truth(t))).astype(np.float32) for t in truths]  # 1 on cell, 0 on membrane
        scores = evaluate_slices(probs, truths)
        rows.append([name, *(scores[k] for k in ("v_rand", "v_info", "dice", "accuracy"))])
        common.log(f"{name}: " + " ".join(f"{value:.4f}" for value in rows[-1][1:]))
    result["slices"] = names
    result["tables"] = [common.table(f"Report slices {', '.join(names)}",
                                     ["the annotation as a prediction", "V_rand", "V_info", "membrane Dice",
                                      "pixel accuracy"], rows)]
    result["notes"] = ["Membrane pixels are "
                       f"{np.mean([(~cell_mask_from_truth(t)).mean() for t in truths]):.3f} of these slices."]
    render.write_results(result, args.out)
    return result


if __name__ == "__main__":
    main()
