"""Quality studies: what segexp's recipes score on the report slices no choice saw, trained as a user would train
them (`segexp train -m ...` sweeps into a store of their own) and compared with `segexp compare`. Each is
`python -m studies.<name>` from the checkout; `--quick` checks a study end to end in seconds (numbers are noise).

    quality           whole recipes under a wall-clock budget, scored with and without TTA, with learning curves
                      python -m studies.quality --name quality_default --recipes default --budget-minutes 0
    replicates        recipes over seeds, then `segexp compare` of the sweeps (mean, 95% CI, paired t-test)
                      python -m studies.replicates --budget-minutes 5 --seeds 1 2 3 --store ../bench-out
    levers            one sweep per change to isbi_best (loss, crop, width, precision, EMA, clDice, schedule)
                      python -m studies.levers --store ../bench-study --levers auto ema cldice --name levers_more
    study             an Optuna search around isbi_best, its winner retrained on fresh seeds and compared
                      python -m studies.study --store ../bench-out --against isbi_best seed_replica --trials 10
    thresholds        (a helper of the three above) the pixel threshold chosen on the selection slices vs 0.5
    metric_agreement  segexp's V_rand/V_info against the literal Fiji transcription on a trained model
                      python -m studies.metric_agreement --run bench/results/quality_default/default

Results go to bench/results/<name>.{json,md} beside the speed benchmarks' (`--out` elsewhere);
`python -m bench.render` puts them into docs/results.md (tables and pictures) and BENCHMARKS.md. Training takes
from minutes (`--budget-minutes 5`) to hours; `--reuse-training` renders what a store already holds.
"""
