"""trickbench's Hydra launchers (conf/hydra/launcher/gpus.yaml)."""
