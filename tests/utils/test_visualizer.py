"""The visualiser and palette: colours, label placement, legend, drawing order, sizes."""
from __future__ import annotations

import numpy as np
import pytest

from freeseg.utils.colors import class_colors, id_to_rgb, jitter_color, rgb_to_id, text_color_on
from freeseg.utils.visualizer import Label, Style, Visualizer, draw_labels, label_anchor, legend_panel


def test_palette_is_deterministic_and_distinct():
    a, b = class_colors(40), class_colors(40)
    assert np.array_equal(a, b) and a.dtype == np.uint8 and a.shape == (40, 3)
    assert np.array_equal(class_colors(10), a[:10])  # a class keeps its colour as the vocabulary grows
    d = np.abs(a[:, None].astype(int) - a[None].astype(int)).sum(-1) + np.eye(40, dtype=int) * 999
    assert d[:12, :12].min() >= 60  # the first dozen classes are clearly apart (L1 over RGB)
    assert d.min() > 0
    assert len({tuple(c) for c in class_colors(256)}) == 256


def test_text_colour_contrasts_with_the_box():
    assert text_color_on(np.array([20, 20, 80])) == (255, 255, 255)
    assert text_color_on(np.array([250, 230, 60])) == (0, 0, 0)
    assert np.array_equal(jitter_color(np.array([10, 20, 30]), 0), [10, 20, 30])
    assert not np.array_equal(jitter_color(np.array([100, 100, 100]), 1), jitter_color(np.array([100, 100, 100]), 2))


def test_id_rgb_round_trip_and_range():
    ids = np.array([[0, 1, 255], [256, 65535, 256**3 - 1]])
    assert np.array_equal(rgb_to_id(id_to_rgb(ids)), ids)
    # COCO's channel order (R the lowest byte), whatever the integer type
    for dtype in (np.int64, np.int32, np.uint32):
        assert id_to_rgb(np.array([1, 256, 65536], dtype)).tolist() == [[1, 0, 0], [0, 1, 0], [0, 0, 1]]
    with pytest.raises(ValueError):
        id_to_rgb(np.array([256**3]))


def test_label_anchor_is_inside_a_ring():
    """A ring's centroid is in its hole; the anchor must be on the ring, at its thickest."""
    yy, xx = np.mgrid[:101, :101]
    r = np.hypot(yy - 50, xx - 50)
    ring = (r > 30) & (r < 45)
    (x, y), inradius = label_anchor(ring)
    assert ring[y, x] and 5 <= inradius <= 8.5
    with pytest.raises(ValueError):
        label_anchor(np.zeros((5, 5), bool))


def test_anchor_prefers_the_thick_part():
    mask = np.zeros((60, 100), bool)
    mask[28:32, 0:60] = True  # a long thin bar
    mask[10:50, 60:100] = True  # a block
    (x, y), _ = label_anchor(mask)
    assert x >= 60


def test_style_scales_with_the_image():
    small, large = Style.for_image(128, 128), Style.for_image(3000, 4000)
    assert small.font_size >= 10 and small.line_width >= 1
    assert large.font_size > 4 * small.font_size and large.line_width > small.line_width


def test_labels_do_not_overlap_and_stay_inside():
    img = np.zeros((60, 80, 3), np.uint8)
    style = Style.for_image(60, 80)
    labels = [Label("first", (40, 30), np.array([255, 0, 0])), Label("second", (40, 30), np.array([0, 255, 0])),
              Label("third", (40, 30), np.array([0, 0, 255])), Label("x", (79, 59), np.array([255, 255, 0]))]
    out, skipped = draw_labels(img, labels, style)
    assert out.shape == img.shape
    # the corner label is clamped inside the image: its yellow box reaches the bottom-right area
    assert (out[-3:, -12:].astype(int).sum(-1) > 300).any()
    many = [Label(f"label {i}", (40, 30), np.array([200, 200, 200])) for i in range(20)]
    _, skipped = draw_labels(img, many, style)
    assert 0 < skipped < 20  # some found room (moved above/below), the rest were left out


def test_legend_wraps_into_columns():
    style = Style.for_image(100, 100)
    entries = [(f"class {i}", np.array([i * 10, 0, 0])) for i in range(3)]
    narrow = legend_panel(entries, 100, style)
    wide = legend_panel(entries * 6, 100, style)
    assert narrow.shape[0] == wide.shape[0] == 100
    assert wide.shape[1] > 2 * narrow.shape[1]


def _scene() -> tuple[np.ndarray, np.ndarray]:
    image = np.full((80, 120, 3), 128, np.uint8)
    labels = np.full((80, 120), 255, np.int64)
    labels[:40] = 0
    labels[40:, :60] = 1
    return image, labels


def test_semantic_overlay_fills_classes_and_adds_a_legend():
    image, labels = _scene()
    vis = Visualizer(["sky", "grass"])
    out = vis.semantic(image, labels)
    assert out.shape[0] == 80 and out.shape[1] > 120
    photo = out[:, :120].astype(int)
    sky = vis.colors[0].astype(int)
    # interior pixel away from labels and contours moves towards the class colour
    assert np.abs(photo[5, 5] - sky).sum() < np.abs(128 - sky).sum()
    assert np.array_equal(photo[75, 115], [128, 128, 128])  # label 255 is not drawn
    assert np.array_equal(vis.semantic(image, labels, legend=False).shape, image.shape)


def test_instances_best_on_top():
    image = np.full((50, 50, 3), 128, np.uint8)
    masks = np.zeros((2, 50, 50), bool)
    masks[0, 5:45, 5:45] = True
    masks[1, 5:45, 5:45] = True
    vis = Visualizer(["red", "blue"], colors=np.array([[255, 0, 0], [0, 0, 255]]), min_label_fraction=1.0)
    out = vis.instances(image, masks, [0, 1], [0.9, 0.4])
    assert out[25, 25, 0] > out[25, 25, 2]  # the 0.9 instance (red) covers the 0.4 one
    out = vis.instances(image, masks, [0, 1], [0.2, 0.4])
    assert out[25, 25, 2] > out[25, 25, 0]
    assert np.array_equal(vis.instances(image, np.zeros((0, 50, 50), bool), [], []), image)


def test_panoptic_and_entity_draw_every_segment():
    image = np.full((40, 60, 3), 100, np.uint8)
    ids = np.zeros((40, 60), np.int64)
    ids[:20] = 1
    ids[20:, :30] = 2
    segments = [{"id": 1, "category_id": 0, "isthing": False, "score": 0.9},
                {"id": 2, "category_id": 1, "isthing": True, "score": 0.6}]
    vis = Visualizer(["sky", "dog"])
    pan = vis.panoptic(image, ids, segments)
    assert pan.shape[1] > 60 and not np.array_equal(pan[10, 5], image[10, 5])
    assert np.array_equal(pan[35, 55], image[35, 55])  # void stays the photo
    ent = vis.entity(image, ids, [{"id": 1, "score": 0.9}, {"id": 2, "score": 0.5}])
    assert ent.shape == image.shape and not np.array_equal(ent[30, 5], image[30, 5])


def test_bad_inputs():
    vis = Visualizer(["a"])
    with pytest.raises(ValueError, match="size"):
        vis.semantic(np.zeros((10, 10, 3), np.uint8), np.zeros((10, 11), np.int64))
    with pytest.raises(ValueError, match="uint8"):
        vis.semantic(np.zeros((10, 10, 3), np.float32), np.zeros((10, 10), np.int64))
    with pytest.raises(ValueError, match="colours"):
        Visualizer(["a", "b"], colors=np.zeros((1, 3), np.uint8))


def test_dark_colours_get_a_lighter_outline():
    from freeseg.utils.visualizer import outline_color

    assert outline_color(np.array([250, 200, 40])) == (250, 200, 40)
    dark = outline_color(np.array([90, 10, 10]))
    assert sum(dark) > 90 + 10 + 10 + 150


def test_legend_title_takes_the_first_row():
    style = Style.for_image(100, 100)
    entries = [("a", np.array([255, 0, 0]))]
    plain = legend_panel(entries, 100, style)
    titled = legend_panel(entries, 100, style, title="share of image")
    # the swatch (pure red) moves down by one row
    red_rows = lambda p: np.nonzero((p[..., 0] > 240) & (p[..., 1] < 20))[0]  # noqa: E731
    assert red_rows(titled).min() - red_rows(plain).min() == style.font_size + 2 * style.padding


def test_legend_shares_never_read_as_zero():
    from freeseg.utils.visualizer import _percent

    assert [_percent(f) for f in (0.00001, 0.0006, 0.05, 0.5)] == ["<0.1%", "0.1%", "5.0%", "50%"]
