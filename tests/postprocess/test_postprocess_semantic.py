"""Mask resizing and semantic inference, against the original's outputs (fixture A)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from freeseg.postprocess import resize_to_output, semantic_inference, upsample_masks
from tests.conftest import load_pt


@pytest.fixture(scope="module")
def outputs(fixture_a):
    return load_pt(fixture_a / "outputs.pt")


def test_sem_seg_matches_reference(outputs):
    for image in outputs["per_image"]:
        rec = image["tasks"]["semantic segmentation."]
        masks = upsample_masks(rec["pred_masks"], image["padded_size"], image["image_size"])
        assert tuple(masks.shape[-2:]) == tuple(image["image_size"])
        sem = resize_to_output(semantic_inference(rec["ensembled_scores"], masks), *image["output_size"])
        assert sem.shape == image["sem_seg"].shape
        assert (sem - image["sem_seg"]).abs().max().item() < 1e-4


def test_semantic_inference_by_hand():
    scores = torch.tensor([[0.9, 0.1], [0.2, 0.8]])
    logits = torch.stack([torch.full((2, 3), 10.0), torch.full((2, 3), -10.0)])
    logits[1, 0, 0] = 10.0  # pixel (0, 0) is covered by both queries
    sem = semantic_inference(scores, logits)
    assert sem.shape == (2, 2, 3)
    s1, s0 = torch.sigmoid(torch.tensor(10.0)).item(), torch.sigmoid(torch.tensor(-10.0)).item()
    assert sem[:, 0, 0].tolist() == pytest.approx([(0.9 + 0.2) * s1, (0.1 + 0.8) * s1])
    assert sem[:, 1, 2].tolist() == pytest.approx([0.9 * s1 + 0.2 * s0, 0.1 * s1 + 0.8 * s0])


def test_upsample_uses_align_corners_true_then_crops():
    logits = torch.arange(4.0).view(1, 2, 2)
    up = upsample_masks(logits, (4, 4), (3, 2))
    assert up.shape == (1, 3, 2)
    # align_corners=True keeps the corner values exactly.
    assert up[0, 0, 0].item() == 0.0
    full = F.interpolate(logits[None], size=(4, 4), mode="bilinear", align_corners=True)[0]
    assert torch.equal(up, full[:, :3, :2])
    assert full[0, 3, 3].item() == 3.0


def test_resize_to_output_align_corners_false():
    x = torch.randn(3, 5, 7)
    assert resize_to_output(x, 5, 7) is x
    want = F.interpolate(x[None], size=(10, 3), mode="bilinear", align_corners=False)[0]
    assert torch.equal(resize_to_output(x, 10, 3), want)


@pytest.mark.parametrize("block", [1, 7, 50, 1 << 16])
def test_banded_semantic_inference_equals_the_one_shot_product(block):
    g = torch.Generator().manual_seed(0)
    scores, logits = torch.rand(9, 5, generator=g), 4 * torch.randn(9, 13, 11, generator=g)
    # a cropped (non-contiguous) view too, as upsample_masks returns them
    for masks in (logits, 4 * torch.randn(9, 16, 14, generator=g)[:, :13, :11]):
        want = torch.einsum("qk,qhw->khw", scores, masks.sigmoid())
        got = semantic_inference(scores, masks, block=block)
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
        assert torch.equal(got.argmax(0), want.argmax(0))


def test_resize_nearest_is_nearest_exact_for_any_dtype():
    from freeseg.postprocess import resize_nearest

    x = torch.arange(2 * 5 * 7, dtype=torch.float32).view(2, 5, 7)
    for size in ((11, 16), (3, 4), (5, 7), (13, 5)):
        expected = torch.nn.functional.interpolate(x[None], size=size, mode="nearest-exact")[0]
        torch.testing.assert_close(resize_nearest(x, *size), expected, rtol=0, atol=0)
        ids = resize_nearest(x.to(torch.int32), *size)
        assert ids.dtype == torch.int32 and torch.equal(ids, expected.to(torch.int32))
    masks = resize_nearest(x > 30, 10, 14)
    assert masks.dtype == torch.bool and torch.equal(masks, resize_nearest(x, 10, 14) > 30)
    assert resize_nearest(x, 5, 7) is x
