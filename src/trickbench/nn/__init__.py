from trickbench.nn import activation, init, norm
from trickbench.nn.activation import ACTIVATIONS, make_activation
from trickbench.nn.init import INITS, init_weights
from trickbench.nn.norm import NORMS, NormSpec, make_norm_spec

RULES = [*norm.RULES, *activation.RULES, *init.RULES]

__all__ = ["RULES", "ACTIVATIONS", "make_activation", "INITS", "init_weights", "NORMS", "NormSpec", "make_norm_spec"]
