"""Quality studies: what segexp's recipes score on the report slices no choice saw, trained as a user would train
them (`segexp train -m ...` sweeps into a store of their own) and compared with `segexp compare`. Each is
`python -m studies.<name>` from the checkout; `--quick` checks a study end to end in seconds (numbers are noise).

    quality           whole recipes under a wall-clock budget, scored with and without TTA, with learning curves
                      python -m studies.quality --name quality_default --recipes default --budget-minutes 0
    replicates        recipes over seeds, then `segexp compare` of the sweeps (mean, 95% CI, paired t-test); a
                      recipe may carry overrides, --train-missing keeps (or resumes) the sweeps a store holds
                      python -m studies.replicates --budget-minutes 5 --seeds 1 2 3 --store ../bench-out
    levers            one sweep per change to isbi_best (loss, crop, width, precision, EMA, clDice, schedule)
                      python -m studies.levers --store ../bench-study --levers auto ema cldice --name levers_more
    study             an Optuna search around isbi_best, its winner retrained on fresh seeds and compared
                      python -m studies.study --store ../bench-out --against isbi_best seed_replica --trials 10
    thresholds        (a helper of the three above) the pixel threshold chosen on the selection slices vs 0.5
    metric_agreement  segexp's V_rand/V_info against the literal Fiji transcription on a trained model
                      python -m studies.metric_agreement --run bench/results/quality_default/default
    label_tolerance   the annotation with its boundaries moved a pixel or two, scored as a prediction (seconds)
                      python -m studies.label_tolerance
    postprocess       each checkpoint of a sweep as a map and with each segmentation stage, compared by seed
    checkpoint_choice the selection slices' best epoch against the last one, on the same runs
    multiclass        a k-class example over seeds: per-class scores, confusion, colour panels
    partitioning      cross-validation folds of isbi_best and isbi_affinities, every stage's grid scored per slice
                      and kept per fold, so folds trained in different sessions add up; pooled choice, mean ± CI
                      python -m studies.partitioning --runs SWEEP/0 SWEEP/1

Results go to bench/results/<name>.{json,md} beside the speed benchmarks' (`--out` elsewhere);
`python -m bench.render` puts them into docs/results.md (tables and pictures) and BENCHMARKS.md. Training takes
from minutes (`--budget-minutes 5`) to hours; `--reuse-training` renders what a store already holds.
"""
