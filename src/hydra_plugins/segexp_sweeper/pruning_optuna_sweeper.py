"""segexp's Optuna sweeper (hparams_search=optuna): Hydra loads sweepers only from the hydra_plugins
package, so the class lives here; what it does is in segexp.experiments.optuna_sweeper."""

from typing import Any

try:  # the `sweep` extra; without it Hydra must still start quietly
    import hydra_plugins.hydra_optuna_sweeper.optuna_sweeper as optuna_plugin
except ImportError:
    optuna_plugin = None

if optuna_plugin is not None:
    class PruningOptunaSweeper(optuna_plugin.OptunaSweeper):
        """The plugin's OptunaSweeper with pruning and a study that continues from its storage."""

        def __init__(self, **kwargs: Any) -> None:
            from segexp.experiments.optuna_sweeper import PruningOptunaSweeperImpl  # optuna: only when a sweep runs

            self.sweeper = PruningOptunaSweeperImpl(**kwargs)
