"""FreeSeg's segmentation head: pixel decoder + text interaction + masked-attention decoder."""
from freeseg.modeling.heads.interaction import ContextInteraction, CrossModalAttention
from freeseg.modeling.heads.interaction_head import (
    SEM_SEG_HEADS,
    MaskFormerInteractionHead,
    build_interaction_head,
    build_sem_seg_head,
)

__all__ = [
    "SEM_SEG_HEADS",
    "ContextInteraction",
    "CrossModalAttention",
    "MaskFormerInteractionHead",
    "build_interaction_head",
    "build_sem_seg_head",
]
