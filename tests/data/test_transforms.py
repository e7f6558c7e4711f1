"""Transforms: detectron2's size rules and numerics, image/label consistency."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from freeseg.data.transforms import (
    AugInput,
    CenterCrop,
    ColorAugSSD,
    ColorAugSSDTransform,
    CropImageWithMask,
    FixedSizeCrop,
    RandomCropCategoryAreaConstraint,
    RandomFlip,
    RandomResizedCrop,
    ResizeScale,
    ResizeShortestEdge,
    apply_augmentations,
    shortest_edge_size,
)
from freeseg.data.mappers.test import TestMapper


@pytest.mark.parametrize("hw,short,max_size,expected", [
    ((256, 256), 176, 2560, (176, 176)),
    ((240, 360), 176, 2560, (176, 264)),
    ((480, 640), 640, 2560, (640, 853)),  # 853.33 -> 853
    ((375, 500), 512, 2048, (512, 683)),  # 682.67 -> 683
    ((100, 1000), 640, 2560, (256, 2560)),  # long side capped
    ((333, 500), 320, 2560, (320, 480)),  # 480.48 -> 480
    ((4, 3000), 128, 256, (1, 256)),  # 0.34 -> 1: never a side of 0 (detectron2 gives 0 and PIL fails)
    ((3000, 4), 128, 256, (256, 1)),
])
def test_shortest_edge_rule(hw, short, max_size, expected) -> None:
    assert shortest_edge_size(*hw, short, max_size) == expected


def test_test_mapper_matches_reference_inputs(fixture_a, tmp_path) -> None:
    """The reference fed the model images from detectron2's test mapper: bit-identical here."""
    from PIL import Image

    inputs = torch.load(fixture_a / "inputs.pt", weights_only=True)
    mapper = TestMapper(min_size=176, max_size=2560)
    for i, (orig, expected) in enumerate(zip(inputs["orig_images"], inputs["images"])):
        path = tmp_path / f"{i}.png"
        Image.fromarray(orig.permute(1, 2, 0).numpy()).save(path)
        out = mapper({"file_name": str(path), "image_id": i})
        assert torch.equal(out["image"], expected)
        assert (out["height"], out["width"]) == tuple(orig.shape[1:])


def test_resize_labels_nearest_like_torch() -> None:
    lab = np.arange(12, dtype=np.int64).reshape(3, 4)
    out = apply_augmentations([ResizeShortestEdge(6, 100, "choice")], AugInput(np.zeros((3, 4, 3), np.uint8), sem_seg=lab))
    ref = torch.nn.functional.interpolate(torch.from_numpy(lab)[None, None].double(), (6, 8), mode="nearest")[0, 0]
    assert out.image.shape == (6, 8, 3) and np.array_equal(out.sem_seg, ref.long().numpy())


def test_choice_sampling_draws_from_list() -> None:
    np.random.seed(0)
    aug = ResizeShortestEdge([320, 384, 448], 2560, "choice")
    shorts = {aug.get_transform(AugInput(np.zeros((100, 150, 3), np.uint8))).new_h for _ in range(40)}
    assert shorts == {320, 384, 448}


def test_category_area_constraint_rejects_single_class_crops() -> None:
    sem = np.zeros((64, 64), np.int64)
    sem[:, 48:] = 1  # class 0 dominates most windows
    np.random.seed(3)
    aug = RandomCropCategoryAreaConstraint("absolute", (32, 32), 0.75, 255)
    for _ in range(20):
        t = aug.get_transform(AugInput(np.zeros((64, 64, 3), np.uint8), sem_seg=sem))
        crop = sem[t.y0 : t.y0 + 32, t.x0 : t.x0 + 32]
        _, cnt = np.unique(crop, return_counts=True)
        assert len(cnt) > 1 and cnt.max() < 0.75 * cnt.sum()


def test_category_area_ignores_255_and_gives_up_after_ten_tries() -> None:
    sem = np.full((40, 40), 255, np.int64)
    sem[:, :20] = 4  # only one real class anywhere: every try fails, the 10th crop is kept
    np.random.seed(0)
    t = RandomCropCategoryAreaConstraint("absolute", (16, 16), 0.5, 255).get_transform(
        AugInput(np.zeros((40, 40, 3), np.uint8), sem_seg=sem))
    assert (t.w, t.h) == (16, 16)


def test_color_aug_matches_explicit_ops() -> None:
    import cv2

    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (8, 10, 3), dtype=np.uint8)
    params = {"brightness": 10.5, "contrast_first": True, "contrast": 1.3, "saturation": None, "hue": 7}
    out = ColorAugSSDTransform(params).apply_image(img)
    bgr = img[:, :, ::-1].astype(np.float32) + 10.5
    bgr = np.clip(bgr, 0, 255).astype(np.uint8)
    bgr = np.clip(bgr.astype(np.float32) * 1.3, 0, 255).astype(np.uint8)
    hsv = cv2.cvtColor(bgr, cv2.COLOR_BGR2HSV)
    hsv[:, :, 0] = (hsv[:, :, 0].astype(int) + 7) % 180
    ref = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[:, :, ::-1]
    assert np.array_equal(out, ref)
    np.random.seed(1)
    lab = rng.integers(0, 5, (8, 10))
    res = apply_augmentations([ColorAugSSD()], AugInput(img, sem_seg=lab.copy()))
    assert np.array_equal(res.sem_seg, lab) and res.image.dtype == np.uint8


def test_flip_moves_image_and_labels_together() -> None:
    img = np.zeros((4, 6, 3), np.uint8)
    img[:, 0] = 200
    lab = np.zeros((4, 6), np.int64)
    lab[:, 0] = 3
    np.random.seed(0)
    flipped = 0
    for _ in range(20):
        out = apply_augmentations([RandomFlip()], AugInput(img, sem_seg=lab))
        assert ((out.image[..., 0] == 200) == (out.sem_seg == 3)).all()
        flipped += int(out.sem_seg[0, -1] == 3)
    assert 3 < flipped < 17


def test_lsj_output_is_fixed_size_and_padded() -> None:
    np.random.seed(0)
    img = np.full((60, 90, 3), 7, np.uint8)
    lab = np.ones((60, 90), np.int64)
    sizes = set()
    for _ in range(10):
        out = apply_augmentations([ResizeScale(0.1, 2.0, 64, 64), FixedSizeCrop((64, 64))], AugInput(img, sem_seg=lab))
        assert out.image.shape == (64, 64, 3) and out.sem_seg.shape == (64, 64)
        pad = out.sem_seg == 255
        assert (out.image[pad] == 128).all() and (out.image[~pad] == 7).all()
        sizes.add(int((~pad).sum()))
    assert len(sizes) > 3  # the scale really jitters


def test_region_crops_keep_the_mask() -> None:
    img = np.zeros((50, 80, 3), np.uint8)
    mask = np.zeros((50, 80), bool)
    mask[10:20, 60:80] = True  # touches the right border: the crop keeps the last column
    t = CropImageWithMask(1.0).get_transform(AugInput(img, mask=mask))
    assert (t.x0, t.y0, t.w, t.h) == (60, 10, 20, 10)
    np.random.seed(0)
    out = apply_augmentations([CropImageWithMask(1.0), RandomResizedCrop((224, 224))], AugInput(img, mask=mask))
    assert out.image.shape == (224, 224, 3) and out.mask.shape == (224, 224)
    out = apply_augmentations([CropImageWithMask(1.0), CenterCrop((224, 224))], AugInput(img, mask=mask))
    assert out.image.shape == (224, 224, 3) and out.mask.sum() == mask.sum()  # padded, not resized
