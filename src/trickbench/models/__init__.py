from trickbench.models import mlp, plain, registry, resnet, speednet, transfer  # noqa: F401  (registers the models)
from trickbench.models.registry import MODELS, build_model, count_params, model_options

# registry's last: its meta-device build runs after every model's own limits, which name the key
RULES = [*plain.RULES, *mlp.RULES, *resnet.RULES, *transfer.RULES, *registry.RULES]

__all__ = ["MODELS", "RULES", "build_model", "count_params", "model_options"]
