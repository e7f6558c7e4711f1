"""Post-processing: semantic, panoptic, instance and entity inference, and mask resizing.

Pure functions on one image's class scores [Q, K] (probabilities, no void) and mask logits
[Q, H, W]; see each function for the output layout.
"""
from freeseg.postprocess.entity import entity_inference
from freeseg.postprocess.instance import instance_inference, masks_to_boxes
from freeseg.postprocess.panoptic import panoptic_inference
from freeseg.postprocess.reference import reference_panoptic_inference
from freeseg.postprocess.resize import resize_nearest, resize_to_output, upsample_masks
from freeseg.postprocess.semantic import semantic_inference

__all__ = [
    "entity_inference",
    "instance_inference",
    "masks_to_boxes",
    "panoptic_inference",
    "reference_panoptic_inference",
    "resize_nearest",
    "resize_to_output",
    "semantic_inference",
    "upsample_masks",
]
