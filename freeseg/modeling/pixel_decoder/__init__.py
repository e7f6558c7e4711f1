"""Pixel decoders (Mask2Former's multi-scale deformable-attention decoder)."""
from freeseg.modeling.pixel_decoder.encoder import MSDeformAttnTransformerEncoderOnly
from freeseg.modeling.pixel_decoder.msdeformattn import (
    PIXEL_DECODERS,
    MSDeformAttnPixelDecoder,
    build_msdeformattn_pixel_decoder,
    build_pixel_decoder,
)

__all__ = [
    "PIXEL_DECODERS",
    "MSDeformAttnPixelDecoder",
    "MSDeformAttnTransformerEncoderOnly",
    "build_msdeformattn_pixel_decoder",
    "build_pixel_decoder",
]
