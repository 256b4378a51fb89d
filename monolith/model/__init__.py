"""The MonolithModel: registered layers and ``build_monolith``."""

from monolith.model.build import OUTPUTS, build_monolith, encoder_from, input_names
from monolith.model.layers import L2Normalize, TransformerBlock

__all__ = [
    "OUTPUTS",
    "L2Normalize",
    "TransformerBlock",
    "build_monolith",
    "encoder_from",
    "input_names",
]
