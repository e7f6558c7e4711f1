"""The quickstart world: deterministic scenes, compositional split, COCO-format files that the
real loaders read, and a tiny CLIP that loads through the same path as OpenAI's weights."""
from __future__ import annotations

import json

import numpy as np
import torch
from PIL import Image

from freeseg.data.catalog import DatasetCatalog, MetadataCatalog
from freeseg.data.prepare.coco_alldata import rgb2id
from freeseg.data.world.classes import NOVEL, world_classes
from freeseg.data.world.clip_pretrain import TinyClipSpec, make_pairs, pretrain_tiny_clip
from freeseg.data.world.register import register_world
from freeseg.data.world.scene import caption, render_scene
from freeseg.data.world.writer import write_split
from freeseg.modeling.clip.model import build_clip_from_state_dict


def test_novel_classes_are_new_combinations_of_seen_words():
    classes = world_classes()
    seen_words = {w for c in classes if c.seen for w in c.name.split()}
    novel = [c for c in classes if not c.seen]
    assert {c.name for c in novel} == set(NOVEL) and all(c.isthing for c in novel)
    for c in novel:
        assert all(w in seen_words for w in c.name.split()), c.name


def test_scenes_are_deterministic_and_segments_disjoint():
    a = render_scene(world_classes(), np.random.default_rng(3))
    b = render_scene(world_classes(), np.random.default_rng(3))
    assert np.array_equal(a.image, b.image) and len(a.segments) == len(b.segments)
    total = sum(s.mask.astype(int) for s in a.segments)
    assert total.max() == 1  # occlusion resolved: one owner per pixel
    assert any(s.category.isthing for s in a.segments) and any(not s.category.isthing for s in a.segments)
    text = caption(a, np.random.default_rng(0))
    assert all(s.category.name in text for s in a.segments)


def test_written_world_loads_through_the_registered_data_sets(tmp_path):
    root = tmp_path / "freeseg_world"
    write_split(root, "train", 6, seed=1)
    write_split(root, "val", 4, seed=2)
    names = ["world_train_full_task_base", "world_val_full_task",
             "world_train_full_task_base_classification", "world_val_full_task_classification"]
    for n in names:  # re-point the built-in registrations at this root
        DatasetCatalog.pop(n, None)
        MetadataCatalog.remove(n)
    try:
        register_world(str(tmp_path))
        train = DatasetCatalog.get("world_train_full_task_base")
        val = DatasetCatalog.get("world_val_full_task")
        assert len(train) == 6 and len(val) == 4
        base_meta = MetadataCatalog.get("world_train_full_task_base")
        assert not set(NOVEL) & set(base_meta.stuff_classes)  # the base split never names them
        meta = MetadataCatalog.get("world_val_full_task")
        assert meta.trainable_flag == [int(c.seen) for c in world_classes()]
        for d in val:  # panoptic PNG ids, JSON segments and the label map agree
            ids = rgb2id(np.asarray(Image.open(d["pan_seg_file_name"]).convert("RGB")))
            labels = np.asarray(Image.open(d["sem_seg_file_name"]))
            for seg in d["segments_info"]:
                mask = ids == seg["id"]
                assert mask.sum() == seg["area"] and (labels[mask] == seg["category_id"]).all()
        stage1 = DatasetCatalog.get("world_train_full_task_base_classification")
        assert {d["task"] for d in stage1} == {"sem_seg", "ins_seg", "pan_seg"}
        captions = json.loads((root / "annotations" / "captions_val2017.json").read_text())
        assert len(captions["annotations"]) == 4
    finally:
        for n in names:
            DatasetCatalog.pop(n, None)
            MetadataCatalog.remove(n)
        from freeseg.data.builtin import dataset_root

        register_world(dataset_root())


def test_clip_pairs_include_novel_names_and_tiny_clip_loads(tmp_path):
    spec = TinyClipSpec(embed_dim=64, vision_width=64, vision_layers=1, patch_size=16,
                        image_size=32, text_width=64, text_layers=1, context_length=48)
    images, texts = make_pairs(6, seed=0, image_size=spec.image_size)
    assert images.shape[1:] == (3, 32, 32) and len(images) == len(texts)
    assert any(name in t for t in texts for name in NOVEL)
    out = tmp_path / "clip.pt"
    summary = pretrain_tiny_clip(out, num_scenes=4, steps=2, batch_size=8, spec=spec)
    assert np.isfinite(summary["loss"]) and 0 <= summary["region_acc_unseen"] <= 1
    state = torch.load(out, weights_only=True)
    assert "token_embedding.weight" in state and "visual.conv1.weight" in state  # OpenAI names
    clip = build_clip_from_state_dict(state)
    assert clip.positional_embedding.shape == (48, 64) and clip.visual.image_size[0] == 32
