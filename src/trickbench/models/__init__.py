from trickbench.models import mlp, plain, registry, resnet, speednet, transfer  # noqa: F401  (registers the models)
from trickbench.models.registry import MODELS, build_model, count_params, model_options

RULES = [*registry.RULES, *plain.RULES, *mlp.RULES, *resnet.RULES, *transfer.RULES]

__all__ = ["MODELS", "RULES", "build_model", "count_params", "model_options"]
