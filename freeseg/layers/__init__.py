"""Small building blocks shared by the backbones and heads."""
from freeseg.layers.batch_norm import FrozenBatchNorm2d, get_norm
from freeseg.layers.mlp import MLP
from freeseg.layers.position_encoding import PositionEmbeddingSine
from freeseg.layers.shape_spec import ShapeSpec
from freeseg.layers.wrappers import Conv2d, c2_msra_fill, c2_xavier_fill

__all__ = [
    "Conv2d",
    "FrozenBatchNorm2d",
    "MLP",
    "PositionEmbeddingSine",
    "ShapeSpec",
    "c2_msra_fill",
    "c2_xavier_fill",
    "get_norm",
]
