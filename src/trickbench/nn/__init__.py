from trickbench.nn.activation import ACTIVATIONS, make_activation
from trickbench.nn.init import INITS, init_weights
from trickbench.nn.norm import NORMS, NormSpec, make_norm_spec

__all__ = ["ACTIVATIONS", "make_activation", "INITS", "init_weights", "NORMS", "NormSpec", "make_norm_spec"]
