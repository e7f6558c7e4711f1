"""The original's (buggy) panoptic inference, against fixture A's panoptic outputs."""
from __future__ import annotations

import pytest
import torch

from freeseg.postprocess import upsample_masks
from freeseg.postprocess.reference import reference_panoptic_inference
from tests.conftest import load_pt

PANOPTIC = "panoptic segmentation."


def test_reference_panoptic_matches_original(fixture_a):
    outputs = load_pt(fixture_a / "outputs.pt")
    inputs = load_pt(fixture_a / "inputs.pt")
    is_thing = torch.tensor(inputs["thing_flags"], dtype=torch.bool)
    for image in outputs["per_image"]:
        rec = image["tasks"][PANOPTIC]
        masks = upsample_masks(rec["pred_masks"], image["padded_size"], image["image_size"])
        pan, segments = reference_panoptic_inference(
            rec["ensembled_scores"], masks, is_thing, num_classes_filter=10,
            output_size=image["output_size"], overlap_threshold=0.5,
        )
        assert pan.dtype == torch.int32
        assert torch.equal(pan, image["panoptic_seg"].to(torch.int32))
        assert segments == [dict(s) for s in image["segments_info"]]


def test_reference_bugs_are_reproduced():
    n, k = 260, 3
    masks = torch.full((n, 1, n), -20.0)
    masks[torch.arange(n), 0, torch.arange(n)] = 20.0  # query i owns column i
    scores = torch.zeros(n, k)
    scores[:, 0] = 1.0  # all thing class 0
    pan, segments = reference_panoptic_inference(
        scores, masks, torch.tensor([True, False, False]), num_classes_filter=k, output_size=(1, n)
    )
    # ids wrap through uint8: column 256 holds id 257 % 256 = 1, and ids > 255 are dropped.
    assert pan[0, 256].item() == 1 and pan[0, 255].item() == 0
    assert len(segments) == 255
    # the label equal to num_classes_filter is dropped even though it is a real class
    _, segments = reference_panoptic_inference(
        scores, masks, torch.tensor([True, False, False]), num_classes_filter=0, output_size=(1, n)
    )
    assert segments == []
