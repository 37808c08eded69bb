"""trickbench: what makes a CNN train better? Every trick a Hydra config, measured with Lightning."""
