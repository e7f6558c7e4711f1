"""CLIP building/loading from local files, region crops, ensemble, and fixture parity."""
from __future__ import annotations

import pytest
import torch

from freeseg.modeling.clip import (
    ClipArch,
    MaskFormerClipAdapter,
    PromptLearner,
    build_clip,
    build_clip_from_arch,
    build_clip_from_state_dict,
    clip_config_from_state_dict,
    crop_regions,
    ensemble_scores,
    expand_box,
    load_clip_state_dict,
    mask_boxes,
    match_clip_to_state_dict,
)
from freeseg.modeling.clip.fast_visual import fast_visual_forward, supports_fast_forward
from freeseg.modeling.clip.model import resolve_clip_name
from freeseg.utils.errors import FreeSegError
from tests.conftest import load_pt

TINY = ClipArch(embed_dim=64, vision_layers=1, vision_width=64, vision_patch_size=16, image_size=32,
                context_length=77, vocab_size=49408, text_width=64, text_layers=1)


def _tiny(seed: int = 0, arch: ClipArch = TINY):
    torch.manual_seed(seed)
    return build_clip_from_arch(arch).eval()


def _features(model, images, text):
    with torch.no_grad():
        return model.encode_image(images), model.encode_text(text)


def test_arch_inferred_from_state_dict_and_weights_round_trip(tmp_path):
    model = _tiny()
    sd = model.state_dict()
    assert clip_config_from_state_dict(sd) == TINY
    path = tmp_path / "clip.pt"
    torch.save({k: v.half() for k, v in sd.items()}, path)  # OpenAI ships fp16 weights
    loaded = load_clip_state_dict(str(path))
    assert all(v.dtype == torch.float32 for v in loaded.values() if v.is_floating_point())
    rebuilt = build_clip_from_state_dict(loaded)
    images, text = torch.randn(2, 3, 32, 32), torch.randint(1, 400, (2, 77))
    ref = _features(build_clip_from_state_dict({k: v.half().float() for k, v in sd.items()}), images, text)
    got = _features(rebuilt, images, text)
    for a, b in zip(ref, got):
        torch.testing.assert_close(a, b)


def test_loads_freeseg_and_open_clip_checkpoint_layouts(tmp_path):
    sd = _tiny(1).state_dict()
    torch.save({"model": {f"clip_adapter.clip_model.{k}": v for k, v in sd.items()}, "iteration": 3}, tmp_path / "a.pth")
    torch.save({"epoch": 1, "state_dict": {f"module.{k}": v for k, v in sd.items()}}, tmp_path / "b.pt")
    for name in ("a.pth", "b.pt"):
        loaded = load_clip_state_dict(str(tmp_path / name))
        assert set(loaded) == set(sd)
        torch.testing.assert_close(loaded["text_projection"], sd["text_projection"])


def test_loads_torchscript_archive(tmp_path):
    class Holder(torch.nn.Module):  # a scripted module with CLIP's parameter names
        def __init__(self, clip):
            super().__init__()
            for name, child in clip.named_children():
                self.add_module(name, child)
            for name, p in clip.named_parameters(recurse=False):
                self.register_parameter(name, p)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x

    sd = _tiny(2).state_dict()
    holder = Holder(_tiny(2))
    torch.jit.save(torch.jit.trace(holder, torch.zeros(1)), str(tmp_path / "ViT-B-16.pt"))
    loaded = load_clip_state_dict(str(tmp_path / "ViT-B-16.pt"))
    assert set(loaded) == set(sd)
    torch.testing.assert_close(loaded["visual.proj"], sd["visual.proj"])


def test_missing_weights_error_names_file_and_keys(tmp_path):
    with pytest.raises(FreeSegError, match=r"ViT-B-16\.pt.*CLIP_WEIGHTS.*FREESEG_CLIP_WEIGHTS"):
        build_clip("ViT-B/16", str(tmp_path / "nope.pt"))


def test_names_map_to_open_clip_quickgelu():
    assert resolve_clip_name("ViT-B/16") == ("ViT-B-16-quickgelu", True)
    assert resolve_clip_name("ViT-L/14") == ("ViT-L-14-quickgelu", True)
    assert resolve_clip_name("ViT-B-32") == ("ViT-B-32", False)
    with pytest.raises(FreeSegError, match="CLIP_MODEL_NAME"):
        resolve_clip_name("ViT-Q/99")


def test_checkpoint_load_rebuilds_clip_to_checkpoint_architecture():
    big = ClipArch(**{**TINY.__dict__, "text_layers": 2, "vision_layers": 2})
    src = MaskFormerClipAdapter(_tiny(3, big), PromptLearner(prompt_dim=64, token_embedding=_tiny(3, big).token_embedding))
    dst = MaskFormerClipAdapter(_tiny(4), PromptLearner(prompt_dim=64, token_embedding=_tiny(4).token_embedding))
    missing, unexpected = dst.load_state_dict(src.state_dict(), strict=False)
    assert missing == [] and unexpected == []
    assert len(dst.clip_model.transformer.resblocks) == 2
    assert not any(p.requires_grad for p in dst.clip_model.parameters())
    names = ["cat", "dog"]
    with torch.no_grad():
        torch.testing.assert_close(dst.text_features(names, "semantic segmentation."),
                                   src.text_features(names, "semantic segmentation."))
    # explicit form, for loaders that filter keys by shape first
    other = torch.nn.ModuleDict({"clip_adapter": MaskFormerClipAdapter(_tiny(5), PromptLearner(prompt_dim=64))})
    assert match_clip_to_state_dict(other, {f"clip_adapter.{k}": v for k, v in src.state_dict().items()}) == ["clip_adapter"]


def test_mask_boxes_match_brute_force():
    torch.manual_seed(0)
    masks = torch.rand(5, 13, 17) > 0.93
    masks[0] = False
    boxes = mask_boxes(masks)
    assert boxes[0].tolist() == [0, 0, 0, 0]
    for m, b in zip(masks[1:], boxes[1:]):
        ys, xs = torch.nonzero(m, as_tuple=True)
        assert b.tolist() == [xs.min().item(), ys.min().item(), xs.max().item() + 1, ys.max().item() + 1]


def test_expand_box_truncates_and_clips():
    assert expand_box([2.0, 3.0, 7.0, 9.0], 1.0, 20, 20) == (2, 3, 7, 9)
    assert expand_box([2.0, 3.0, 7.0, 9.0], 2.0, 10, 8) == (0, 0, 8, 10)
    assert expand_box([1.0, 1.0, 4.0, 4.0], 1.5, 10, 10) == (0, 0, 4, 4)  # int(-0.25)=0, int(4.75)=4


@pytest.mark.parametrize("fill", [0.0, 100.0])
def test_crop_fills_outside_mask_then_normalises(fill):
    image = torch.full((3, 8, 8), 200, dtype=torch.uint8)
    mask = torch.zeros(1, 8, 8)
    mask[0, 2:6, 2:6] = 1
    mask[0, 2, 2] = 0  # corner inside the box but outside the mask gets the fill
    out = crop_regions(image, mask, mask_boxes(mask > 0), fill=torch.full((3,), fill),
                       pixel_mean=torch.full((3,), 50.0), pixel_std=torch.full((3,), 10.0), size=4)
    assert out.shape == (1, 3, 4, 4)
    assert out[0, :, 0, 0].allclose(torch.full((3,), (fill - 50) / 10))  # align_corners keeps corners
    assert out[0, :, 3, 3].allclose(torch.full((3,), 15.0))


def test_ensemble_formula_and_modes():
    p = torch.tensor([[0.6, 0.3], [0.2, 0.5]])
    c = torch.tensor([[0.9, 0.1], [1.0, 1.0]])
    valid = torch.tensor([True, False])
    s, keep = ensemble_scores(p, c, valid, torch.tensor([1, 0]), 0.8)
    assert keep.all()
    expected = torch.tensor([[0.6**0.8 * 0.9**0.2, 0.3**0.2 * 0.1**0.8], [0.2**0.8, 0.5**0.2]])
    torch.testing.assert_close(s, expected)
    s_none, _ = ensemble_scores(p, c, valid, None, 0.8)  # no flags: every class unseen
    torch.testing.assert_close(s_none, p.pow(0.2) * c.pow(0.8))
    s_clip, keep = ensemble_scores(p, c, valid, None, 0.0)
    assert keep.tolist() == [True, False] and torch.equal(s_clip, c[:1])


def _fixture_adapter(fixture_a):
    sd = load_pt(fixture_a / "model_final.pth")["model"]
    clip = build_clip_from_state_dict({k[24:]: v for k, v in sd.items() if k.startswith("clip_adapter.clip_model.")})
    adapter = MaskFormerClipAdapter(clip, PromptLearner(prompt_dim=64, token_embedding=clip.token_embedding))
    adapter.load_state_dict({k[13:]: v for k, v in sd.items() if k.startswith("clip_adapter.")})
    return adapter.eval()


def test_region_scores_and_ensemble_match_reference(fixture_a):
    adapter = _fixture_adapter(fixture_a)
    inputs, outputs = load_pt(fixture_a / "inputs.pt"), load_pt(fixture_a / "outputs.pt")
    inter = load_pt(fixture_a / "intermediates.pt")
    flags = torch.tensor(inputs["trainable_flag"])
    for i, image in enumerate(inputs["images"]):
        for task, ref in outputs["per_image"][i]["tasks"].items():
            with torch.no_grad():
                r = adapter.classify_regions(image, inter[i]["clip_bin_masks"][task].float(), ref["text_features"])
            assert torch.equal(r.valid, ref["clip_valid"])
            torch.testing.assert_close(r.boxes, ref["clip_boxes"].float(), atol=0, rtol=0)
            torch.testing.assert_close(r.features, ref["clip_region_features"], atol=1e-4, rtol=0)
            torch.testing.assert_close(r.logits, ref["clip_logits"], atol=1e-3, rtol=0)
            torch.testing.assert_close(r.probs[r.valid], ref["clip_probs"], atol=1e-4, rtol=0)
            p = torch.softmax(ref["pred_logits"], -1)[:, :-1]
            s, _ = ensemble_scores(p, r.probs, r.valid, flags, 0.8)
            torch.testing.assert_close(s, ref["ensembled_scores"], atol=1e-4, rtol=0)


def test_no_valid_region_means_no_clip_call_and_neutral_scores(fixture_a):
    adapter = _fixture_adapter(fixture_a)
    image = load_pt(fixture_a / "inputs.pt")["images"][0]
    text = torch.nn.functional.normalize(torch.randn(4, 64), dim=-1)
    empty = torch.zeros(3, *image.shape[-2:])  # every query's mask below MASK_THR
    with torch.no_grad():
        r = adapter.classify_regions(image, empty, text)
    assert not r.valid.any() and r.features.shape == (0, 64)
    assert torch.equal(r.probs, torch.ones(3, 3))  # invalid queries get c = 1


@pytest.mark.parametrize("quick_gelu", [True, False])
def test_fast_visual_forward_matches_open_clip(quick_gelu):
    arch = ClipArch(embed_dim=48, vision_layers=2, vision_width=128, vision_patch_size=8, image_size=32,
                    context_length=77, vocab_size=49408, text_width=64, text_layers=1)
    torch.manual_seed(0)
    model = build_clip_from_arch(arch, quick_gelu=quick_gelu).eval()
    assert supports_fast_forward(model.visual)
    images = torch.randn(5, 3, 32, 32)
    with torch.no_grad():
        ref = model.encode_image(images)
        fast = fast_visual_forward(model.visual, images)
    torch.testing.assert_close(fast, ref, atol=1e-5 * ref.abs().max().item(), rtol=0)
    # differentiable too (the QuickGELU scaling is not done in place when a backward needs it)
    images.requires_grad_(True)
    fast_visual_forward(model.visual, images).sum().backward()
    g_fast, images.grad = images.grad.clone(), None
    model.encode_image(images).sum().backward()
    torch.testing.assert_close(g_fast, images.grad, atol=1e-5 * images.grad.abs().max().item(), rtol=0)


def test_fast_visual_forward_runs_the_last_block_for_the_class_token_only():
    from torch.utils.flop_counter import FlopCounterMode

    arch = ClipArch(embed_dim=48, vision_layers=1, vision_width=64, vision_patch_size=8, image_size=32,
                    context_length=77, vocab_size=49408, text_width=64, text_layers=1)
    torch.manual_seed(0)
    model = build_clip_from_arch(arch, quick_gelu=True).eval()
    images = torch.randn(3, 3, 32, 32)
    counted = {}
    with torch.no_grad():
        for name, forward in (("fast", lambda: fast_visual_forward(model.visual, images)),
                              ("open_clip", lambda: model.encode_image(images))):
            with FlopCounterMode(display=False) as counter:
                out = forward()
            counted[name] = (counter.get_total_flops(), out)
    torch.testing.assert_close(counted["fast"][1], counted["open_clip"][1], atol=1e-5, rtol=0)
    tokens, width = (32 // 8) ** 2 + 1, 64
    # a single (hence last) block: the MLP alone (2 products of W x 4W) runs on 1 token, not 17
    mlp_saved = 3 * (tokens - 1) * 2 * (2 * width * 4 * width)
    assert counted["open_clip"][0] - counted["fast"][0] >= mlp_saved


def test_fast_visual_forward_declines_towers_it_does_not_reproduce():
    from open_clip.transformer import VisionTransformer

    plain = dict(image_size=32, patch_size=8, width=64, layers=1, heads=1, mlp_ratio=4.0, output_dim=32)
    assert supports_fast_forward(VisionTransformer(**plain))
    layer_scale = VisionTransformer(**plain, ls_init_value=0.1)
    assert not supports_fast_forward(layer_scale)
    assert fast_visual_forward(layer_scale, torch.randn(1, 3, 32, 32)) is None
    assert not supports_fast_forward(VisionTransformer(**plain, pool_type="avg"))


def test_fixture_clip_takes_the_fast_path_and_region_batch_does_not_change_scores(fixture_a):
    adapter = _fixture_adapter(fixture_a)
    assert supports_fast_forward(adapter.clip_model.visual)  # so the parity test above covers it
    inputs, outputs = load_pt(fixture_a / "inputs.pt"), load_pt(fixture_a / "outputs.pt")
    masks = load_pt(fixture_a / "intermediates.pt")[0]["clip_bin_masks"]
    task, ref = next(iter(outputs["per_image"][0]["tasks"].items()))
    scores = []
    for batch in (0, 1, 3):
        adapter.region_batch = batch
        with torch.no_grad():
            scores.append(adapter.classify_regions(inputs["images"][0], masks[task].float(), ref["text_features"]))
    for r in scores[1:]:
        torch.testing.assert_close(r.features, scores[0].features, atol=1e-6, rtol=0)
    clip = adapter.clip_model
    with pytest.raises(FreeSegError, match="REGION_BATCH"):
        MaskFormerClipAdapter(clip, PromptLearner(prompt_dim=64, token_embedding=clip.token_embedding), region_batch=-1)


def test_low_precision_regions_are_close_and_follow_the_weights(fixture_a):
    adapter = _fixture_adapter(fixture_a)
    inputs, outputs = load_pt(fixture_a / "inputs.pt"), load_pt(fixture_a / "outputs.pt")
    masks = load_pt(fixture_a / "intermediates.pt")[0]["clip_bin_masks"]
    task, ref = next(iter(outputs["per_image"][0]["tasks"].items()))
    keys = set(adapter.state_dict())
    adapter.region_dtype = "bfloat16"
    with torch.no_grad():
        low = adapter.classify_regions(inputs["images"][0], masks[task].float(), ref["text_features"])
    assert set(adapter.state_dict()) == keys  # the bf16 copy is not part of the checkpoint
    assert low.features.dtype == torch.float32
    cos = torch.nn.functional.cosine_similarity(low.features, ref["clip_region_features"])
    assert cos.min() > 0.999 and not torch.equal(low.features, ref["clip_region_features"])
    # new CLIP weights (a checkpoint load) make a new low-precision copy
    with torch.no_grad():
        adapter.clip_model.visual.proj.mul_(-1)
        flipped = adapter.classify_regions(inputs["images"][0], masks[task].float(), ref["text_features"])
    torch.testing.assert_close(flipped.features, -low.features, atol=1e-6, rtol=0)
    clip = adapter.clip_model
    with pytest.raises(FreeSegError, match="REGION_DTYPE"):
        MaskFormerClipAdapter(clip, PromptLearner(prompt_dim=64, token_embedding=clip.token_embedding),
                              region_dtype="int8")
