"""trickbench: what makes a CNN train better? Every trick a Hydra config, measured with Lightning."""

from trickbench.config import resolvers as _resolvers  # noqa: F401  registers the resolvers conf/ interpolates
