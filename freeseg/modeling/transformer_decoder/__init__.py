"""The masked-attention transformer decoder (Mask2Former) with FreeSeg's class-embedding head."""
from freeseg.modeling.transformer_decoder.attention_layers import CrossAttentionLayer, FFNLayer, SelfAttentionLayer
from freeseg.modeling.transformer_decoder.masked_decoder import (
    TRANSFORMER_DECODERS,
    MultiScaleMaskedTransformerDecoder,
    build_transformer_decoder,
)

__all__ = [
    "TRANSFORMER_DECODERS",
    "CrossAttentionLayer",
    "FFNLayer",
    "MultiScaleMaskedTransformerDecoder",
    "SelfAttentionLayer",
    "build_transformer_decoder",
]
