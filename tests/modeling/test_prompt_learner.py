"""Prompt learner layout, text classifier cache, stage-1 prompt loading, and fixture parity."""
from __future__ import annotations

import pytest
import torch

from freeseg.modeling.clip import ClipArch, MaskFormerClipAdapter, PromptLearner, build_clip_from_arch, get_tokenizer
from freeseg.utils.errors import FreeSegError
from tests.conftest import load_pt

TINY = ClipArch(embed_dim=64, vision_layers=1, vision_width=64, vision_patch_size=16, image_size=32,
                context_length=77, vocab_size=49408, text_width=64, text_layers=1)
SEM, INS = "semantic segmentation.", "instance segmentation."


@pytest.fixture()
def adapter() -> MaskFormerClipAdapter:
    torch.manual_seed(0)
    clip = build_clip_from_arch(TINY)
    return MaskFormerClipAdapter(clip, PromptLearner(prompt_dim=64, token_embedding=clip.token_embedding)).eval()


def test_layout_and_signals_follow_freeseg(adapter):
    learner = adapter.prompt_learner
    shapes = {k: tuple(v.shape) for k, v in learner.state_dict().items()}
    assert shapes == {"prefix_prompt": (16, 64), "task_prompt": (8, 64), "start_signal": (1, 64),
                      "dot_signal": (1, 64), "end_signal": (1, 64), "pad_signal": (1, 64)}
    table = adapter.clip_model.token_embedding.weight
    tok = get_tokenizer()
    dot = tok.encode(".")[0]
    for name, idx in (("start_signal", tok.sot_id), ("dot_signal", dot), ("end_signal", tok.eot_id), ("pad_signal", 0)):
        assert torch.equal(getattr(learner, name)[0], table[idx])
    assert set(adapter.state_dict()) >= {"non_object_embedding", "pixel_mean", "pixel_std"}


def test_sequence_is_read_at_eot(adapter):
    """Features equal CLIP's text tower run on the explicit FreeSeg sequence, read at EOT."""
    clip, learner, tok = adapter.clip_model, adapter.prompt_learner, get_tokenizer()
    emb = clip.token_embedding.weight
    task, noun = tok.encode(INS), tok.encode("wine glass")
    seq = torch.cat([emb[task], learner.task_prompt, learner.start_signal, learner.prefix_prompt, emb[noun],
                     learner.dot_signal, learner.end_signal])
    eot = seq.shape[0] - 1
    assert eot == len(task) + 8 + 1 + 16 + len(noun) + 1
    x = torch.cat([seq, learner.pad_signal.expand(77 - seq.shape[0], -1)])[None] + clip.positional_embedding
    with torch.no_grad():
        x = clip.ln_final(clip.transformer(x, attn_mask=clip.attn_mask))[0, eot] @ clip.text_projection
        got = adapter.class_text_features(["wine glass"], INS)
    torch.testing.assert_close(got[0], torch.nn.functional.normalize(x, dim=-1))


def test_text_features_have_void_last_and_differ_by_task(adapter):
    with torch.no_grad():
        sem, ins = adapter.text_features(["cat", "dog"], SEM), adapter.text_features(["cat", "dog"], INS)
    assert sem.shape == (3, 64)
    torch.testing.assert_close(sem.norm(dim=-1), torch.ones(3))
    torch.testing.assert_close(sem[-1], torch.nn.functional.normalize(adapter.non_object_embedding[0], dim=0))
    assert (sem[:2] - ins[:2]).abs().max() > 1e-3  # the original's noun-only cache made these equal


def test_cache_hits_and_invalidates_on_weight_change(adapter):
    with torch.no_grad():
        first = adapter.class_text_features(["cat"], SEM)
        assert adapter.class_text_features(["cat"], SEM) is first
        assert adapter.class_text_features(["cat"], INS) is not first
        adapter.prompt_learner.prefix_prompt.normal_()  # in place, like an optimizer step
        second = adapter.class_text_features(["cat"], SEM)
    assert second is not first and (second - first).abs().max() > 1e-4


def test_gradients_reach_prompts_not_clip(adapter):
    adapter.train()
    assert not adapter.clip_model.training
    feats = adapter.text_features(["cat", "dog"], SEM)
    feats.sum().backward()
    assert adapter.prompt_learner.prefix_prompt.grad is not None
    assert adapter.prompt_learner.task_prompt.grad is not None
    assert adapter.non_object_embedding.grad is not None
    assert all(p.grad is None for p in adapter.clip_model.parameters())


def test_bad_vocabularies_raise_before_compute(adapter):
    with pytest.raises(FreeSegError, match="empty vocabulary"):
        adapter.check_vocabulary([], SEM)
    with pytest.raises(FreeSegError, match="duplicate"):
        adapter.check_vocabulary(["cat", "dog", "cat"], SEM)
    with pytest.raises(FreeSegError, match="CLIP tokens"):
        adapter.check_vocabulary([" ".join(["zebra"] * 60)], SEM)


def test_prompt_dim_mismatch_raises():
    torch.manual_seed(0)
    clip = build_clip_from_arch(TINY)
    adapter = MaskFormerClipAdapter(clip, PromptLearner(prompt_dim=32))
    with pytest.raises(FreeSegError, match="PROMPT_DIM"):
        adapter.text_features(["cat"], SEM)


def test_stage1_prompt_checkpoint_loads_and_freezes(adapter, tmp_path):
    with torch.no_grad():
        adapter.prompt_learner.prefix_prompt.normal_()
    state = {f"clip_adapter.prompt_learner.{k}": v for k, v in adapter.prompt_learner.state_dict().items()}
    torch.save({"model": state, "iteration": 10}, tmp_path / "stage1.pth")
    fresh = PromptLearner(prompt_dim=64, token_embedding=adapter.clip_model.token_embedding)
    fresh.load_prompt_checkpoint(str(tmp_path / "stage1.pth"))
    assert torch.equal(fresh.prefix_prompt, adapter.prompt_learner.prefix_prompt)
    assert not fresh.trainable
    with pytest.raises(FreeSegError, match="PROMPT_CHECKPOINT"):
        fresh.load_prompt_checkpoint(str(tmp_path / "missing.pth"))


def test_text_features_match_reference(fixture_a):
    from freeseg.modeling.clip import build_clip_from_state_dict

    sd = load_pt(fixture_a / "model_final.pth")["model"]
    clip = build_clip_from_state_dict({k[24:]: v for k, v in sd.items() if k.startswith("clip_adapter.clip_model.")})
    adapter = MaskFormerClipAdapter(clip, PromptLearner(prompt_dim=64, token_embedding=clip.token_embedding))
    adapter.load_state_dict({k[13:]: v for k, v in sd.items() if k.startswith("clip_adapter.")})
    inputs, outputs = load_pt(fixture_a / "inputs.pt"), load_pt(fixture_a / "outputs.pt")
    for task, ref in outputs["per_image"][0]["tasks"].items():
        with torch.no_grad():
            got = adapter.text_features(inputs["class_names"], task)
        torch.testing.assert_close(got, ref["text_features"], atol=1e-4, rtol=0)


def test_text_tower_skips_padding_only_under_a_causal_mask(adapter):
    from freeseg.modeling.clip.model import encode_text_embeddings

    clip = adapter.clip_model
    torch.manual_seed(0)
    x, eot = torch.randn(3, 77, clip.ln_final.weight.shape[0]), torch.tensor([5, 12, 30])

    def full_length(mask):
        h = clip.ln_final(clip.transformer(x + clip.positional_embedding, attn_mask=mask))
        return h[torch.arange(3), eot] @ clip.text_projection

    causal = clip.attn_mask
    with torch.no_grad():
        torch.testing.assert_close(encode_text_embeddings(clip, x, eot), full_length(causal))
        clip.attn_mask = torch.zeros_like(causal)  # bidirectional: the padding does matter
        try:
            torch.testing.assert_close(encode_text_embeddings(clip, x, eot), full_length(clip.attn_mask))
        finally:
            clip.attn_mask = causal


@pytest.mark.parametrize("shape, config_makes", [
    (dict(prefix_length=8), "prefix_prompt [8, 64], task_prompt [8, 64]"),
    (dict(task_prompt_length=4), "prefix_prompt [16, 64], task_prompt [4, 64]"),
    (dict(suffix_length=2), "prefix_prompt [16, 64], suffix_prompt [2, 64], task_prompt [8, 64]"),
])
def test_prompt_checkpoint_of_other_shapes_names_both_and_the_keys(adapter, tmp_path, shape, config_makes):
    state = {f"clip_adapter.prompt_learner.{k}": v for k, v in adapter.prompt_learner.state_dict().items()}
    torch.save({"model": state}, tmp_path / "stage1.pth")
    other = PromptLearner(prompt_dim=64, token_embedding=adapter.clip_model.token_embedding, **shape)
    with pytest.raises(FreeSegError) as info:
        other.load_prompt_checkpoint(str(tmp_path / "stage1.pth"))
    assert str(info.value) == (
        f"prompt checkpoint '{tmp_path / 'stage1.pth'}' holds prefix_prompt [16, 64], task_prompt [8, 64] but the "
        f"config makes {config_makes}; set MODEL.CLIP_ADAPTER.PROMPT_SHAPE (16, 0), TASK_PROMPT_SHAPE 8 and "
        "PROMPT_DIM 64 as it was trained with, or PROMPT_CHECKPOINT '' to learn new prompts"
    )


@pytest.mark.parametrize("contents, problem", [
    (b"", "is empty (0 bytes)"),
    (b"not a checkpoint\n", "cannot be read: it is truncated, damaged or no PyTorch checkpoint"),
    (None, "cannot be read: it is truncated, damaged or no PyTorch checkpoint"),  # the first half of a real one
])
def test_damaged_prompt_checkpoint_is_one_line(adapter, tmp_path, contents, problem):
    path = tmp_path / "stage1.pth"
    torch.save({"model": {"clip_adapter.prompt_learner.task_prompt": torch.zeros(8, 64)}}, path)
    path.write_bytes(path.read_bytes()[:300] if contents is None else contents)
    with pytest.raises(FreeSegError) as info:
        PromptLearner(prompt_dim=64).load_prompt_checkpoint(str(path))
    assert str(info.value).startswith(f"prompt checkpoint '{path}' {problem}") and "\n" not in str(info.value)
    assert str(info.value).endswith("set MODEL.CLIP_ADAPTER.PROMPT_CHECKPOINT to a stage-1 model_final.pth")
