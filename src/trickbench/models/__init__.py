from trickbench.models import mlp, plain, resnet, speednet  # noqa: F401  (registers the models)
from trickbench.models.registry import MODELS, build_model, count_params, model_options

__all__ = ["MODELS", "build_model", "count_params", "model_options"]
