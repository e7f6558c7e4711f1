"""The demo's pieces without a model: argument splitting, vocabulary, inputs, output encodings."""
from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_util

from freeseg.cli import demo
from freeseg.cli.demo_outputs import (
    ResultWriter,
    encode_rle,
    filter_segments,
    instances_json,
    mask_bbox_xywh,
    panoptic_json,
    semantic_label_map,
)
from freeseg.cli.predictor import DemoPredictor, DemoVocabulary, postprocess_bytes_per_pixel, resized_size
from freeseg.config import get_cfg
from freeseg.data.catalog import DatasetCatalog, MetadataCatalog
from freeseg.utils.colors import id_to_rgb, rgb_to_id
from freeseg.utils.errors import FreeSegError


def test_trailing_config_keys_are_split_from_inputs(tmp_path):
    img = tmp_path / "a.jpg"
    img.write_bytes(b"x")
    inputs, opts = demo.split_inputs_and_opts([str(img), "b/*.png", "MODEL.WEIGHTS", "w.pth", "SOLVER.X", "1"])
    assert inputs == [str(img), "b/*.png"]
    assert opts == ["MODEL.WEIGHTS", "w.pth", "SOLVER.X", "1"]
    assert demo.split_inputs_and_opts(["x.jpg"]) == (["x.jpg"], [])


def test_vocabulary_from_list_and_file(tmp_path):
    assert demo.parse_vocabulary(" cat, dog ,,sky ") == ["cat", "dog", "sky"]
    f = tmp_path / "names.txt"
    f.write_text("# my classes\nperson\n\nwine glass  # with a space\n")
    assert demo.parse_vocabulary(str(f)) == ["person", "wine glass"]
    with pytest.raises(FreeSegError, match="names no classes"):
        demo.parse_vocabulary(",")


def test_vocabulary_that_looks_like_a_file_must_be_one(tmp_path):
    for value in ("vocab.txt", str(tmp_path / "deep" / "folder" / "my_classes")):
        with pytest.raises(FreeSegError, match="vocabulary file not found: .*one name per line, or comma-separated"):
            demo.parse_vocabulary(value)
    with pytest.raises(FreeSegError, match="is a folder"):
        demo.parse_vocabulary(str(tmp_path))
    binary = tmp_path / "photo.png"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe\x00")
    with pytest.raises(FreeSegError, match="photo.png is not UTF-8 text"):
        demo.parse_vocabulary(str(binary))
    # names are still names: a comma, or no path-like part
    assert demo.parse_vocabulary("st. bernard") == ["st. bernard"]
    assert demo.parse_vocabulary("vocab.txt,dog") == ["vocab.txt", "dog"]


def test_vocabulary_flags_come_from_the_test_set_metadata():
    name = "demo_test_meta_set"
    MetadataCatalog.get(name).set(stuff_classes=["cat", "grass", "dog"], thing_classes=["cat", "dog"],
                                  trainable_flag=[1, 1, 0])
    try:
        cfg = get_cfg()
        cfg.DATASETS.TEST = (name,)
        default = demo.resolve_vocabulary(cfg, None, None)
        assert default == DemoVocabulary(("cat", "grass", "dog"), (1, 1, 0), (1, 0, 1))
        # names the data set does not know: unseen things
        custom = demo.resolve_vocabulary(cfg, "grass,zebra", None)
        assert custom.trainable_flag == (1, 0) and custom.thing_flags == (0, 1)
        assert demo.resolve_vocabulary(cfg, "grass,zebra", "zebra").thing_flags == (1, 0)
        with pytest.raises(FreeSegError, match="not in the vocabulary"):
            demo.resolve_vocabulary(cfg, "grass,zebra", "sky")
        with pytest.raises(FreeSegError, match="duplicate"):
            demo.resolve_vocabulary(cfg, "cat,cat", None)
        with pytest.raises(FreeSegError, match="names no classes"):  # --vocabulary "": not the default
            demo.resolve_vocabulary(cfg, "", None)
    finally:
        MetadataCatalog.remove(name)


def test_default_vocabulary_of_a_data_set_from_a_yaml_file(tmp_path):
    """DATASETS.CUSTOM in the config: the demo's default vocabulary is its test set's classes,
    with their seen and thing flags (registered from the file, as train_net does)."""
    from tests.data.test_custom_panoptic import write_panoptic_data

    cfg = get_cfg()
    cfg.DATASETS.CUSTOM = (str(write_panoptic_data(tmp_path, "demo_custom_pan")),)
    cfg.DATASETS.TEST = ("demo_custom_pan_val",)
    try:
        vocabulary = demo.resolve_vocabulary(cfg, None, None)
    finally:
        for name in [n for n in list(DatasetCatalog) if n.startswith("demo_custom_pan_")]:
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)
    assert vocabulary == DemoVocabulary(("person", "car", "road", "sky"), (1, 0, 1, 1), (1, 1, 0, 0))


def test_collect_inputs_folders_globs_and_order(tmp_path):
    (tmp_path / "d" / "sub").mkdir(parents=True)
    for p in ("d/b.png", "d/a.jpg", "d/sub/c.PNG", "d/notes.txt", "e.png"):
        (tmp_path / p).write_bytes(b"x")
    found = demo.collect_inputs([str(tmp_path / "d"), str(tmp_path / "*.png"), str(tmp_path / "d" / "a.jpg")])
    names = [p[len(str(tmp_path)) + 1:] for p in found]
    assert names == ["d/a.jpg", "d/b.png", "d/sub/c.PNG", "e.png"]  # sorted, txt ignored, no repeats
    with pytest.raises(FreeSegError, match="holds no images"):
        (tmp_path / "empty").mkdir()
        demo.collect_inputs([str(tmp_path / "empty")])
    with pytest.raises(FreeSegError, match="no --input"):
        demo.collect_inputs([])


def test_read_rgb_scales_16_bit_and_float_images(tmp_path):
    ramp = np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "gray16.png")
    assert Image.open(tmp_path / "gray16.png").mode == "I;16"
    rgb = demo.read_rgb(str(tmp_path / "gray16.png"))
    assert rgb.dtype == np.uint8 and rgb.shape == (64, 64, 3)
    np.testing.assert_array_equal(rgb[..., 0], np.round(ramp / 257.0).astype(np.uint8))  # not all white
    Image.fromarray(np.full((4, 4), 0.5, np.float32), mode="F").save(tmp_path / "half.tif")
    assert demo.read_rgb(str(tmp_path / "half.tif")).max() == 128  # [0, 1] floats
    Image.fromarray(np.full((4, 4), 200, np.int32), mode="I").save(tmp_path / "i32.tif")
    assert demo.read_rgb(str(tmp_path / "i32.tif")).max() == 200  # 8-bit values in a 32-bit image


def test_output_that_is_a_file_is_an_error(tmp_path):
    (tmp_path / "taken").write_text("x")
    for out in ("taken", "taken/sub"):
        with pytest.raises(FreeSegError, match="taken is a file, not a folder"):
            demo.check_output_dir(str(tmp_path / out))
    demo.check_output_dir(str(tmp_path / "new" / "folder"))  # created later: fine


def test_unique_stems():
    used: set[str] = set()
    assert [demo.unique_stem(p, used) for p in ("a/x.jpg", "b/x.png", "x.gif", "y.jpg")] == ["x", "x_2", "x_3", "y"]


def test_label_map_dtype_follows_the_class_count():
    small = torch.zeros(255, 4, 5)
    small[254, 1, 2] = 1
    lm = semantic_label_map(small)
    assert lm.dtype == np.uint8 and lm[1, 2] == 254 and lm[0, 0] == 0
    big = torch.zeros(300, 4, 5)
    big[299, 3, 4] = 1
    lm = semantic_label_map(big)
    assert lm.dtype == np.uint16 and lm[3, 4] == 299
    path_png = Image.fromarray(lm)
    assert np.array_equal(np.asarray(path_png), lm)  # uint16 survives PNG encoding


def test_panoptic_rgb_round_trip_and_json():
    ids = np.zeros((6, 8), np.int64)
    ids[1:3, 2:5] = 1
    ids[4:6, :] = 70000  # needs all three channels
    assert np.array_equal(rgb_to_id(id_to_rgb(ids)), ids)
    vocab = DemoVocabulary(("cat", "sky"), None, (1, 0))
    info = panoptic_json(ids, [{"id": 1, "category_id": 0, "isthing": True, "score": 0.9},
                               {"id": 70000, "category_id": 1, "isthing": False, "score": 0.7}], vocab, "img", "img_ids.png")
    assert info["segments_info"][0] == {"id": 1, "category_id": 0, "category_name": "cat", "isthing": 1, "iscrowd": 0,
                                        "area": 6, "bbox": [2, 1, 3, 2], "score": 0.9}
    assert info["segments_info"][1]["area"] == 16 and info["segments_info"][1]["isthing"] == 0
    assert info["categories"] == [{"id": 0, "name": "cat", "isthing": 1}, {"id": 1, "name": "sky", "isthing": 0}]
    json.dumps(info)  # JSON-ready


def test_filter_segments_voids_dropped_ids():
    ids = torch.tensor([[1, 1, 2], [3, 3, 0]], dtype=torch.int32)
    kept_ids, kept = filter_segments(ids, [{"id": 1, "score": 0.9}, {"id": 2, "score": 0.2}, {"id": 3, "score": 0.5}], 0.5)
    assert [s["id"] for s in kept] == [1, 3]
    assert kept_ids.tolist() == [[1, 1, 0], [3, 3, 0]]


def test_instances_json_rle_round_trip():
    masks = torch.zeros(2, 5, 7, dtype=torch.bool)
    masks[0, 1:4, 2:6] = True
    masks[1, 0, 0] = True
    inst = {"pred_masks": masks, "scores": torch.tensor([0.8, 0.3]), "pred_classes": torch.tensor([1, 0]),
            "pred_boxes": torch.tensor([[2.0, 1.0, 6.0, 4.0], [0.0, 0.0, 1.0, 1.0]])}
    data = instances_json(inst, DemoVocabulary(("a", "b")), "img", (5, 7))
    ann = data["annotations"][0]
    assert ann["category_name"] == "b" and ann["bbox"] == [2.0, 1.0, 4.0, 3.0] and ann["area"] == 12
    decoded = mask_util.decode({"size": ann["segmentation"]["size"], "counts": ann["segmentation"]["counts"].encode()})
    assert np.array_equal(decoded.astype(bool), masks[0].numpy())
    assert encode_rle(np.zeros((0, 5, 7), bool)) == []
    assert mask_bbox_xywh(np.zeros((3, 3), bool)) == [0, 0, 0, 0]


def test_result_writer_only_writes_the_chosen_tasks(tmp_path):
    image = np.full((20, 30, 3), 120, np.uint8)
    sem = torch.zeros(2, 20, 30)
    sem[1, :, 15:] = 1
    writer = ResultWriter(str(tmp_path), DemoVocabulary(("ground", "sky")), ["semantic"], 0.5)
    paths = writer.write("img", image, {"sem_seg": sem})
    assert sorted(p.rsplit("/", 1)[1] for p in paths) == ["img_semantic.png", "img_semantic_labels.png"]
    labels = np.asarray(Image.open(tmp_path / "img_semantic_labels.png"))
    assert labels[:, :15].max() == 0 and labels[:, 15:].min() == 1


def test_resized_size_matches_the_test_mapper():
    assert resized_size(256, 256, 176, 2560) == (176, 176)
    assert resized_size(240, 360, 176, 2560) == (176, 264)
    assert resized_size(100, 4000, 640, 1333) == (33, 1333)
    assert resized_size(50, 60, 0, 1333) == (50, 60)


class _EchoModel(torch.nn.Module):
    """Stands in for OpenVocabulary: records the batches it gets, returns their sizes."""

    def __init__(self) -> None:
        super().__init__()
        self.p = torch.nn.Parameter(torch.zeros(1))
        self.batches: list[list[tuple]] = []
        self.vocab = None
        self.eval_tasks, self.entity_on = ["semantic segmentation."], False  # what the predictor reads
        self.sem_seg_head = SimpleNamespace(predictor=SimpleNamespace(num_queries=4))

    def set_vocabulary(self, names, trainable=None, things=None):
        self.vocab = list(names)

    def forward(self, batch):
        self.batches.append([tuple(x["image"].shape) for x in batch])
        return [{"sem_seg": torch.zeros(len(self.vocab), x["height"], x["width"])} for x in batch]


def test_predictor_batches_only_equal_sizes_and_keeps_sizes():
    model = _EchoModel()
    pred = DemoPredictor(model, DemoVocabulary(("a", "b")), min_size=32, max_size=1000, batch_size=2)
    images = [np.zeros(s, np.uint8) for s in ((64, 64, 3), (64, 64, 3), (64, 64, 3), (64, 96, 3))]
    outs = pred(images)
    assert model.batches == [[(3, 32, 32), (3, 32, 32)], [(3, 32, 32)], [(3, 32, 48)]]
    assert [tuple(o["sem_seg"].shape[-2:]) for o in outs] == [(64, 64), (64, 64), (64, 64), (64, 96)]
    with pytest.raises(FreeSegError, match="uint8 RGB"):
        pred([np.zeros((8, 8), np.uint8)])
    with pytest.raises(FreeSegError, match="batch-size"):
        DemoPredictor(model, DemoVocabulary(("a",)), min_size=32, max_size=100, batch_size=0)


def test_reduced_post_processing_warns_once_per_size(caplog):
    model = _EchoModel()
    pred = DemoPredictor(model, DemoVocabulary(("a", "b")), min_size=32, max_size=1000, output_memory_gb=1e-6)
    with caplog.at_level("WARNING", logger="freeseg.cli.predictor"):
        outs = pred([np.zeros((64, 96, 3), np.uint8)] * 3)  # e.g. video frames
    assert caplog.text.count("outputs would need more than --output-memory-gb") == 1
    h, w = outs[0]["sem_seg"].shape[-2:]
    per_pixel = postprocess_bytes_per_pixel(classes=2, queries=4, mask_tasks=0)  # the echo model's sizes
    assert h * w * per_pixel <= 1e-6 * 2**30 and h < 64 and w < 96


def test_tasks_space_or_comma_separated():
    assert demo.parse_tasks(["semantic,panoptic", "entity"]) == ["semantic", "panoptic", "entity"]
    assert demo.parse_tasks(None) is None
    with pytest.raises(FreeSegError, match="choose from"):
        demo.parse_tasks(["semantics"])


def test_video_frames_give_overlay_videos(tmp_path):
    cv2 = pytest.importorskip("cv2")
    path = str(tmp_path / "clip.avi")
    out = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"MJPG"), 5.0, (48, 32))
    if not out.isOpened():
        pytest.skip("OpenCV here cannot write video")
    for i in range(3):
        out.write(np.full((32, 48, 3), 60 * i, np.uint8))
    out.release()

    def fake_predictor(frames):
        sem = torch.zeros(2, 32, 48)
        sem[1, :, 24:] = 1
        return [{"sem_seg": sem} for _ in frames]

    writer = ResultWriter(str(tmp_path / "out"), DemoVocabulary(("left", "right")), ["semantic"], 0.5)
    (written,) = demo.run_video(path, "clip", fake_predictor, writer, ["semantic"])
    cap = cv2.VideoCapture(written)
    frames = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    ok, frame = cap.read()
    cap.release()
    assert frames == 3 and ok and frame.shape[:2] == (32, 48)
    with pytest.raises(OSError):
        bad = tmp_path / "bad.mp4"
        bad.write_bytes(b"no video")
        demo.run_video(str(bad), "bad", fake_predictor, writer, ["semantic"])


def test_fast_flag_sets_the_fast_keys_and_overrides_win(tmp_path):
    config = "configs/tiny/tiny_alltask.yaml"
    args = demo.build_parser().parse_args(["--config-file", config, "--fast", "--device", "cpu"])
    cfg, _ = demo.setup_cfg(args, [], None)
    clip = cfg.MODEL.CLIP_ADAPTER
    assert (clip.REGION_TOPK, clip.REGION_DTYPE, cfg.TEST.AMP.ENABLED, cfg.TEST.AMP.DTYPE) == (8, "bfloat16", True, "bfloat16")
    cfg, _ = demo.setup_cfg(args, ["MODEL.CLIP_ADAPTER.REGION_TOPK", "4"], None)
    assert cfg.MODEL.CLIP_ADAPTER.REGION_TOPK == 4 and cfg.TEST.AMP.ENABLED
    assert demo.fast_opts("cuda:0")[3] == "float16"
    plain = demo.build_parser().parse_args(["--config-file", config, "--device", "cpu"])
    cfg, _ = demo.setup_cfg(plain, [], None)
    assert cfg.MODEL.CLIP_ADAPTER.REGION_TOPK == 0 and not cfg.TEST.AMP.ENABLED


class _FailingModel(_EchoModel):
    """The echo model, failing on images 40 pixels wide (as a bad input would)."""

    def forward(self, batch):
        if any(x["width"] == 40 for x in batch):
            raise ValueError("height and width must be > 0")
        return super().forward(batch)


def _run_demo(tmp_path, monkeypatch, images: dict[str, tuple[int, int]], *extra: str, model=None) -> int:
    from freeseg.cli.main import run_command

    for name, (h, w) in images.items():
        if not (tmp_path / name).exists():  # a rerun sees the same files
            Image.fromarray(np.full((h, w, 3), 90, np.uint8)).save(tmp_path / name)
    (tmp_path / "zero.png").write_bytes(b"")
    model = model or _FailingModel()

    def from_config(cls, cfg, vocabulary, *, config_file="", batch_size=1, output_memory_gb=4.0):
        return cls(model, vocabulary, min_size=32, max_size=64, batch_size=batch_size)

    monkeypatch.setattr(DemoPredictor, "from_config", classmethod(from_config))
    return run_command("demo", [
        "--config-file", "configs/tiny/tiny_alltask.yaml", "--device", "cpu", "--vocabulary", "a,b",
        "--task", "semantic", "--output", str(tmp_path / "out"), *extra,
        "--input", *(str(tmp_path / n) for n in [*images, "zero.png"]),
    ])


def test_demo_skips_an_image_that_fails_and_goes_on(tmp_path, monkeypatch, capsys):
    images = {"a.png": (32, 32), "b_bad.png": (32, 40), "c.png": (32, 32), "d_thin.png": (4, 3000)}
    assert _run_demo(tmp_path, monkeypatch, images, "--batch-size", "2") == 0
    captured = capsys.readouterr()
    assert "skipping " + str(tmp_path / "b_bad.png") + ": segmentation failed (ValueError: height and width" in captured.err
    assert "3 input(s) segmented" in captured.out  # a, c, and the 4 x 3000 one (resized to >= 1 pixel)
    for stem in ("a", "c", "d_thin"):
        assert (tmp_path / "out" / f"{stem}_semantic_labels.png").is_file()
    assert "skipped 2 input(s)" in captured.err and "zero.png" in captured.err


def test_demo_that_segments_nothing_is_an_error(tmp_path, monkeypatch, capsys):
    assert _run_demo(tmp_path, monkeypatch, {"b_bad.png": (32, 40)}) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1] == "error: none of the 2 input(s) could be segmented (reasons above); check the files"


def test_folder_without_images_names_the_video_types_too(tmp_path):
    with pytest.raises(FreeSegError, match=r"holds no images \(.*\.png.*\) or videos \(.*\.mp4"):
        demo.collect_inputs([str(tmp_path)])


class _CountingModel(_FailingModel):
    """Counts the images it segments; with ``interrupt_at`` = n, Ctrl-C arrives at the n-th."""

    def __init__(self, interrupt_at: int = 0):
        super().__init__()
        self.calls, self.interrupt_at = 0, interrupt_at

    def forward(self, batch):
        self.calls += len(batch)
        if self.calls == self.interrupt_at:
            raise KeyboardInterrupt
        return super().forward(batch)


def test_rerun_continues_an_interrupted_run_and_other_settings_redo_it(tmp_path, monkeypatch, capsys):
    images = {"a.png": (32, 32), "b.png": (32, 32), "c.png": (32, 32)}

    def run(*extra, interrupt_at=0):
        model = _CountingModel(interrupt_at)
        status = _run_demo(tmp_path, monkeypatch, images, *extra, model=model)
        return status, model.calls, capsys.readouterr().out

    assert run(interrupt_at=2)[0] == 130  # Ctrl-C while segmenting b: a is finished
    assert not (tmp_path / "out" / "b_semantic.png").exists()
    status, calls, out = run()
    assert (status, calls) == (0, 2)  # b and c only
    assert "2 input(s) segmented (semantic); 1 finished by an earlier run with the same settings, kept" in out
    first = (tmp_path / "out" / "a_semantic.png").stat().st_mtime_ns
    assert run()[:2] == (0, 0)  # everything done: nothing recomputed or rewritten
    assert (tmp_path / "out" / "a_semantic.png").stat().st_mtime_ns == first
    (tmp_path / "out" / "c_semantic.png").unlink()  # an output that went missing is redone
    assert run()[1] == 1
    assert run("--confidence-threshold", "0.3")[1] == 3  # other settings: every input again
    assert run("--confidence-threshold", "0.3")[1] == 0
    assert run("--confidence-threshold", "0.3", "--overwrite")[1] == 3
    Image.fromarray(np.full((32, 32, 3), 200, np.uint8)).save(tmp_path / "b.png")  # an edited photo
    assert run("--confidence-threshold", "0.3")[1] == 1
