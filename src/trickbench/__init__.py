"""trickbench: what makes a CNN train better? Every trick a Hydra config, measured with Lightning."""

from trickbench import runfolder as _runfolder  # noqa: E402,F401  registers run.dir's and sweep.dir's resolver
from trickbench import scaled as _scaled  # noqa: E402,F401  registers data.val_size's and the warmup rung's
from trickbench import search as _search  # noqa: E402,F401  registers the resolvers conf/hparams_search/ uses
from trickbench import sweep as _sweep  # noqa: E402,F401  registers the resolver conf/hydra/default.yaml uses
