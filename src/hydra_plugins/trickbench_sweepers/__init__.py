"""trickbench's Hydra sweepers (conf/hydra/sweeper/optuna.yaml)."""
