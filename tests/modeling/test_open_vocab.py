"""OpenVocabulary on the tiny config with a tiny CLIP: outputs, compute sharing, training, errors."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

import freeseg
from freeseg.modeling.clip import ClipArch, build_clip_from_arch
from freeseg.modeling.meta_arch import OpenVocabulary
from freeseg.utils.errors import FreeSegError

REPO = Path(__file__).resolve().parents[2]
TASKS = ["semantic segmentation.", "instance segmentation.", "panoptic segmentation."]
NAMES = ["cat", "grass", "sky-other"]


def _tiny_clip_file(tmp_path: Path, width: int = 64) -> str:
    torch.manual_seed(0)
    arch = ClipArch(embed_dim=width, vision_layers=1, vision_width=64, vision_patch_size=16, image_size=32,
                    context_length=77, vocab_size=49408, text_width=width, text_layers=1)
    path = tmp_path / f"tiny_clip_{width}.pt"
    torch.save(build_clip_from_arch(arch).state_dict(), path)
    return str(path)


def _cfg(tmp_path: Path, **extra):
    cfg = freeseg.get_cfg()
    cfg.merge_from_file(str(REPO / "configs" / "tiny" / "tiny_alltask.yaml"))
    opts = {"MODEL.CLIP_ADAPTER.CLIP_WEIGHTS": _tiny_clip_file(tmp_path), "MODEL.SEM_SEG_HEAD.NUM_CLASSES": 3,
            "INPUT.TASK_NAME": TASKS, "MODEL.MASK_FORMER.TEST.INSTANCE_ON": True,
            "MODEL.MASK_FORMER.TEST.PANOPTIC_ON": True, "SEED": 7, **extra}
    cfg.merge_from_list([x for kv in opts.items() for x in kv])
    return cfg


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> OpenVocabulary:
    torch.manual_seed(0)
    m = freeseg.build_model(_cfg(tmp_path_factory.mktemp("clip")))
    m.set_vocabulary(NAMES, trainable_flag=[1, 0, 1], thing_flags=[1, 0, 0])
    return m.eval()


def _sample(h: int = 64, w: int = 96, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    image = torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8)
    masks = torch.zeros(2, h, w, dtype=torch.bool)
    masks[0, : h // 2], masks[1, h // 2 :] = True, True
    inst = {"gt_classes": torch.tensor([0, 2]), "gt_masks": masks}
    return {"image": image, "height": h + 16, "width": w + 8, "sem_instances": inst, "ins_instances":
            {"gt_classes": torch.tensor([0]), "gt_masks": masks[:1]}, "pan_instances": inst}


def test_eval_outputs_follow_the_contract(model):
    out = model([_sample()])[0]
    assert set(out) == {"sem_seg", "panoptic_seg", "instances"}
    assert out["sem_seg"].shape == (3, 80, 104)
    ids, segments = out["panoptic_seg"]
    assert ids.shape == (80, 104) and ids.dtype == torch.int32
    assert all(s["isthing"] == (s["category_id"] == 0) for s in segments)
    inst = out["instances"]
    assert inst["pred_masks"].shape[1:] == (80, 104) and inst["pred_boxes"].shape[1] == 4
    assert (inst["pred_classes"] == 0).all()  # panoptic on: only things (cat) are instances


def test_backbone_once_per_batch_and_text_once_per_task(model):
    calls = {"backbone": 0, "prompts": 0}
    h1 = model.backbone.register_forward_hook(lambda *a: calls.__setitem__("backbone", calls["backbone"] + 1))
    h2 = model.clip_adapter.prompt_learner.register_forward_hook(lambda *a: calls.__setitem__("prompts", calls["prompts"] + 1))
    try:
        model.set_vocabulary(["dog", "tree", "road"], thing_flags=[1, 0, 0])
        model([_sample(seed=1)])
        assert calls == {"backbone": 1, "prompts": 3}
        model([_sample(seed=2)])  # same vocabulary: cached text features
        assert calls == {"backbone": 2, "prompts": 3}
    finally:
        h1.remove(), h2.remove()
        model.set_vocabulary(NAMES, trainable_flag=[1, 0, 1], thing_flags=[1, 0, 0])


def test_semantic_only_when_tasks_not_listed(tmp_path):
    m = freeseg.build_model(_cfg(tmp_path, **{"INPUT.TASK_NAME": TASKS[:1]}))
    m.set_vocabulary(NAMES)
    out = m.eval()([_sample()])[0]
    assert set(out) == {"sem_seg"}


def test_training_losses_and_task_sampling(model):
    model.train()
    try:
        losses = model([_sample(), _sample(seed=3)])
        assert set(losses) == set(model.criterion.weight_dict)
        total = sum(losses.values())
        assert torch.isfinite(total)
        total.backward()
        assert model.clip_adapter.non_object_embedding.grad is not None
        assert all(p.grad is None for p in model.clip_adapter.clip_model.parameters())
        with pytest.raises(FreeSegError, match="pan_instances"):
            model.losses([{"image": _sample()["image"]}], "panoptic segmentation.")
    finally:
        model.zero_grad(set_to_none=True)
        model.eval()
    import random

    expected = random.Random(7)  # SEED + rank 0
    model._task_rng = random.Random(7)
    picks = [model._task_rng.choice(model.task_names) for _ in range(6)]
    assert picks == [expected.choice(TASKS) for _ in range(6)]


def test_bad_vocabularies_and_configs(model, tmp_path):
    with pytest.raises(FreeSegError, match="empty vocabulary"):
        model.set_vocabulary([])
    with pytest.raises(FreeSegError, match="duplicate"):
        model.set_vocabulary(["cat", "cat"])
    with pytest.raises(FreeSegError, match="CLIP tokens"):
        model.set_vocabulary(["cat", "very " * 50 + "long"])
    with pytest.raises(FreeSegError, match="thing_flags"):
        model.set_vocabulary(["cat", "dog"], thing_flags=[1])
    assert model.vocabulary.class_names == tuple(NAMES)  # a failed call leaves it unchanged
    with pytest.raises(FreeSegError, match="PROMPT_DIM"):
        freeseg.build_model(_cfg(tmp_path, **{"MODEL.CLIP_ADAPTER.CLIP_WEIGHTS": _tiny_clip_file(tmp_path, 128)}))
    with pytest.raises(FreeSegError, match="META_ARCHITECTURE"):
        freeseg.build_model(_cfg(tmp_path, **{"MODEL.META_ARCHITECTURE": "OpenVocabular"}))


def test_checkpoint_round_trip(model, tmp_path):
    path = tmp_path / "model.pth"
    torch.save({"model": model.state_dict()}, path)
    other = freeseg.build_model(_cfg(tmp_path))
    missing, unexpected = freeseg.load_checkpoint(other, str(path))
    assert missing == [] and unexpected == []
    other.set_vocabulary(NAMES, trainable_flag=[1, 0, 1], thing_flags=[1, 0, 0])
    sample = _sample(seed=4)
    torch.testing.assert_close(other.eval()([sample])[0]["sem_seg"], model([sample])[0]["sem_seg"])


def test_fast_mode_scores_skipped_queries_by_the_segmenter_alone(model):
    sample = _sample(seed=3)
    exact = model.predict_tasks([sample])[0]["semantic segmentation."]
    model.region_topk = 2
    try:
        fast = model.predict_tasks([sample])[0]["semantic segmentation."]
    finally:
        model.region_topk = 0
    probs = torch.softmax(exact.pred_logits, -1)[:, :-1]
    chosen = probs.max(1).values.topk(2).indices
    nonempty = (exact.mask_logits.sigmoid() > 0.5).flatten(1).any(1)
    skipped = torch.ones_like(nonempty)
    skipped[chosen] = False
    skipped &= nonempty
    assert skipped.any() and fast.region.valid.sum() <= 2
    # CLIP-scored queries: the exact path's scores; skipped ones: the segmenter's own p
    torch.testing.assert_close(fast.scores[chosen], exact.scores[chosen])
    torch.testing.assert_close(fast.scores[skipped], probs[skipped])
    # the region results are laid out over all queries, as the exact path's
    picked = torch.zeros_like(nonempty)
    picked[chosen] = True
    assert torch.equal(fast.region.valid, exact.region.valid & picked)
    assert (fast.region.probs[~fast.region.valid] == 1).all()
    in_exact = picked[exact.region.valid]  # rows of the exact results that belong to chosen queries
    torch.testing.assert_close(fast.region.features, exact.region.features[in_exact])
    assert torch.equal(fast.region.boxes, exact.region.boxes[in_exact])


def test_region_batch_and_dtype_keys_reach_the_model(model, tmp_path):
    other = freeseg.build_model(_cfg(tmp_path, **{"MODEL.CLIP_ADAPTER.REGION_BATCH": 3,
                                                 "MODEL.CLIP_ADAPTER.REGION_DTYPE": "bfloat16"}))
    assert other.clip_adapter.region_batch == 3 and other.clip_adapter.region_dtype == "bfloat16"
    other.load_state_dict(model.state_dict())
    other.set_vocabulary(NAMES, trainable_flag=[1, 0, 1], thing_flags=[1, 0, 0])
    sample = _sample(seed=5)
    exact = model.predict_tasks([sample])[0]["semantic segmentation."]
    low = other.eval().predict_tasks([sample])[0]["semantic segmentation."]
    assert torch.equal(low.region.valid, exact.region.valid) and exact.region.valid.sum() > 3
    cos = torch.nn.functional.cosine_similarity(low.region.features, exact.region.features)
    assert cos.min() > 0.999 and not torch.equal(low.region.features, exact.region.features)
    with pytest.raises(FreeSegError, match="REGION_DTYPE"):
        freeseg.build_model(_cfg(tmp_path, **{"MODEL.CLIP_ADAPTER.REGION_DTYPE": "half"}))


def test_panoptic_skips_regions_that_cannot_pass_its_threshold(model, monkeypatch):
    import dataclasses

    from freeseg.modeling.meta_arch.outputs import postprocess_image

    sample = _sample(seed=6)
    exact_tasks = model.predict_tasks([sample])[0]
    pan = exact_tasks["panoptic segmentation."]
    probs = torch.softmax(pan.pred_logits, -1)[:, :-1]
    flags = torch.tensor([1, 0, 1])
    bounds = model._panoptic_candidates  # threshold between the queries' bounds: some pass, some not
    upper = torch.where(flags.bool(), probs ** 0.8, probs ** 0.2).max(1).values  # weight 0.8
    assert torch.equal(bounds(probs, flags), upper > model.thresholds.object_mask)
    threshold = float(upper.sort().values[len(upper) // 2])
    monkeypatch.setattr(model, "thresholds", dataclasses.replace(model.thresholds, object_mask=threshold))
    scored = []
    real = model.clip_adapter.classify_regions

    def spy(*args, **kwargs):
        scored.append(int(real(*args, **kwargs).valid.sum()))
        return real(*args, **kwargs)

    monkeypatch.setattr(model.clip_adapter, "classify_regions", spy)
    out = model([sample])[0]
    assert scored[-1] < scored[0] and scored[-1] > 0  # panoptic: fewer regions than semantic
    exact = postprocess_image(exact_tasks, (sample["height"], sample["width"]), model.vocabulary, model.thresholds)
    assert torch.equal(out["panoptic_seg"][0], exact["panoptic_seg"][0]) and exact["panoptic_seg"][1]
    assert out["panoptic_seg"][1] == exact["panoptic_seg"][1]
    assert torch.equal(out["instances"]["scores"], exact["instances"]["scores"])


def test_test_amp_runs_the_network_in_bf16_and_the_rest_in_fp32(model, tmp_path):
    other = freeseg.build_model(_cfg(tmp_path, **{"TEST.AMP.ENABLED": True}))
    assert other.inference_dtype == torch.bfloat16
    other.load_state_dict(model.state_dict())
    other.set_vocabulary(NAMES, trainable_flag=[1, 0, 1], thing_flags=[1, 0, 0])
    other.eval()
    seen = {}

    def record(name):
        def hook(module, inputs, output):
            seen.setdefault(name, output.dtype)
        return hook

    watched = {"backbone conv": other.backbone.stem.conv1,
               "pixel decoder": other.sem_seg_head.pixel_decoder.input_proj[0][0]}
    hooks = [mod.register_forward_hook(record(name)) for name, mod in watched.items()]
    sample = _sample(seed=3)
    exact = model.predict_tasks([sample])[0]["semantic segmentation."]
    low = other.predict_tasks([sample])[0]["semantic segmentation."]
    # the pixel decoder, fp32 under autocast by default (as upstream), joins in under TEST.AMP
    assert seen == {"backbone conv": torch.bfloat16, "pixel decoder": torch.bfloat16}
    for field in ("pred_logits", "pred_masks", "mask_logits", "scores"):
        a, b = getattr(exact, field), getattr(low, field)
        assert b.dtype == torch.float32, field
        assert not torch.equal(a, b) and torch.allclose(a, b, rtol=0.1, atol=0.1 * a.abs().max().item()), field
    assert all(m.dtype == torch.float32 for m in low.aux_pred_masks)
    out = other([sample])[0]
    assert out["sem_seg"].dtype == torch.float32 and out["panoptic_seg"][0].shape == (80, 104)
    # training keeps the upstream fp32 pixel decoder even when TEST.AMP is on
    seen.clear()
    other.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        other([sample])
    assert seen == {"backbone conv": torch.bfloat16, "pixel decoder": torch.float32}
    for h in hooks:
        h.remove()
    other.inference_dtype = None
    assert not other.sem_seg_head.pixel_decoder.low_precision_inference
    with pytest.raises(FreeSegError, match="TEST.AMP.DTYPE"):
        freeseg.build_model(_cfg(tmp_path, **{"TEST.AMP.ENABLED": True, "TEST.AMP.DTYPE": "half"}))


@pytest.mark.parametrize("native", [True, False])
def test_test_amp_warns_once_where_the_cpu_lacks_the_dtype(model, monkeypatch, caplog, native):
    import freeseg.modeling.meta_arch.open_vocabulary as ov

    monkeypatch.setattr(ov, "cpu_has_native", lambda dtype: native)
    model.inference_dtype = torch.float16
    try:
        with caplog.at_level("WARNING", logger=ov.__name__):
            model.predict_tasks([_sample(seed=4)])
            model.predict_tasks([_sample(seed=4)])
    finally:
        model.inference_dtype = None
    warned = [r for r in caplog.records if "TEST.AMP.DTYPE float16" in r.getMessage()]
    assert len(warned) == (0 if native else 1)


def test_instance_task_without_panoptic(model, monkeypatch):
    """Instance on, panoptic off (the original raised NameError there, FREESEG_SPEC §8.2): every
    class may form instances, stuff included, since no panoptic task claims the stuff."""
    monkeypatch.setattr(model, "eval_tasks", [TASKS[0], TASKS[1]])
    out = model([_sample(seed=3)])[0]
    assert set(out) == {"sem_seg", "instances"}
    inst = out["instances"]
    assert inst["pred_masks"].shape == (len(inst["scores"]), 80, 104) and len(inst["scores"]) > 0
    # top-k (100) covers all 12 queries x 3 classes: the stuff classes 1 and 2 are there too
    assert set(inst["pred_classes"].tolist()) == {0, 1, 2}


def test_vocabulary_larger_than_the_training_classes(model, monkeypatch):
    """Classes beyond NUM_CLASSES (3) are kept (the original dropped label == NUM_CLASSES as void,
    §8.3). The class scores are equivariant to the vocabulary's order, so rotating a 6-name
    vocabulary must rotate the panoptic and instance labels and change nothing else; over the
    6 rotations every segment's class takes every index, 3 to 5 included."""
    import dataclasses

    names = ["cat", "dog", "horse", "sheep", "cow", "bird"]
    monkeypatch.setattr(model, "thresholds", dataclasses.replace(model.thresholds, object_mask=0.0))
    sample = _sample(seed=4)
    reference = None
    try:
        for shift in range(len(names)):
            model.set_vocabulary(names[shift:] + names[:shift])
            out = model([sample])[0]
            ids, segments = out["panoptic_seg"]
            # back to the unrotated vocabulary's indices
            labels = sorted((s["id"], (s["category_id"] + shift) % 6, int(s["area"])) for s in segments)
            instances = sorted(((int(c) + shift) % 6, float(p)) for c, p in
                               zip(out["instances"]["pred_classes"], out["instances"]["scores"]))
            if reference is None:
                reference = (ids, labels, instances)
                assert labels  # threshold 0: there are segments to follow
                continue
            assert torch.equal(ids, reference[0]), shift
            assert labels == reference[1], shift
            assert [c for c, _ in instances] == [c for c, _ in reference[2]], shift
            assert [p for _, p in instances] == pytest.approx([p for _, p in reference[2]], abs=1e-5), shift
    finally:
        model.set_vocabulary(NAMES, trainable_flag=[1, 0, 1], thing_flags=[1, 0, 0])
