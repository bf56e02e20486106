"""segexp's V_rand/V_info against a literal transcription of the Fiji reference, on a trained model's
predictions of its report slices:

    python -m studies.metric_agreement --run bench/results/quality_default/default
    python -m studies.metric_agreement --quick --run RUN_DIR     # 64x64 crops: seconds

The transcription (tests/fiji_reference.py) follows the Java line by line and is far too slow for
training, so this runs it once, on real probability maps, threshold by threshold.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from bench import common, render

NAME = "metric_agreement"
TITLE = "Metric agreement: segexp.evaluation.metrics vs a literal transcription of Fiji's reference"
METHOD = ("The run's checkpoint predicts its report slices (segexp's own predictor, inference defaults); both "
          "implementations score the same probability maps at the reference's 11 thresholds, averaged per slice; "
          "the table gives each threshold's scores and their largest absolute difference.")


@dataclass(frozen=True)
class Settings:
    crop: int | None  # None: whole slices
    repeats: int = 1


FULL = Settings(crop=None)
QUICK = Settings(crop=64)


def oracle():
    """Returns the tests' Fiji transcription module (kept with the tests: it is a test oracle)."""
    sys.path.insert(0, str(common.REPO / "tests"))
    import fiji_reference

    return fiji_reference


def report_predictions(run_dir: Path, crop: int | None) -> tuple[list, list, list[str]]:
    """Returns (probability maps, truths, slice names) of the run's report slices."""
    from omegaconf import OmegaConf

    from segexp.config.compose import compose
    from segexp.data.images import to_channels
    from segexp.evaluation.slices import report_set
    from segexp.inference.predictor import load_predictor
    from segexp.tracking.references import resolve_checkpoint

    checkpoint, run = resolve_checkpoint(str(run_dir))
    report = report_set(run)  # at the labels' resolution, as evaluate scores them
    inference = OmegaConf.to_container(compose("predict").inference)
    loaded = load_predictor(checkpoint, run, OmegaConf.create(inference))
    channels, predictor = loaded.channels, loaded.predict
    window = (slice(0, crop), slice(0, crop)) if crop else (slice(None), slice(None))
    probs = [predictor(to_channels(image, channels))[window] for image in report.images]
    return probs, [mask[window] for mask in report.masks], report.names


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    import argparse

    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--run", type=Path, required=True)
    known, rest = pre.parse_known_args(argv)
    args, settings, result = common.begin(NAME, TITLE, METHOD, rest, FULL, QUICK, package="studies")
    result["command"] = common.command_line(NAME, list(argv) if argv is not None else sys.argv[1:], package="studies")
    from segexp.evaluation.metrics import isbi_scores

    probs, truths, names = report_predictions(known.run, settings.crop)
    common.log(f"scoring slices {names} with segexp.evaluation.metrics")
    ours = isbi_scores(probs, truths)
    fiji = oracle()
    rows = []
    for mine in ours["per_threshold"]:
        common.log(f"threshold {mine['threshold']}: the Fiji transcription")
        per_slice = [fiji.slice_fscores(t, p, mine["threshold"]) for t, p in zip(truths, probs)]
        ref_rand = sum(s[0] for s in per_slice) / len(per_slice)
        ref_info = sum(s[1] for s in per_slice) / len(per_slice)
        rows.append([mine["threshold"], mine["v_rand"], ref_rand, mine["v_info"], ref_info,
                     max(abs(mine["v_rand"] - ref_rand), abs(mine["v_info"] - ref_info))])
    result.update(run=str(known.run), slices=names, crop=settings.crop, ours={k: ours[k] for k in (
        "v_rand", "v_info", "v_rand_threshold", "v_info_threshold")}, max_abs_difference=max(r[-1] for r in rows))
    result["tables"] = [common.table(f"Report slices {', '.join(names)} of {known.run.name}"
                                     + (f", {settings.crop}x{settings.crop} crops" if settings.crop else ""),
                                     ["threshold", "V_rand segexp", "V_rand Fiji transcription", "V_info segexp",
                                      "V_info Fiji transcription", "largest abs. difference"], rows)]
    result["notes"] = [f"Largest difference over all thresholds: {result['max_abs_difference']:.2e}; segexp's "
                       f"maxima: V_rand {ours['v_rand']:.4f} at {ours['v_rand_threshold']:.1f}, V_info "
                       f"{ours['v_info']:.4f} at {ours['v_info_threshold']:.1f}."]
    render.write_results(result, args.out)
    return result


if __name__ == "__main__":
    main()
