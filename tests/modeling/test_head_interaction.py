"""ContextInteraction (with the original's quirks) and MaskFormerInteractionHead's encode/decode split."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from freeseg.config import get_cfg
from freeseg.layers import ShapeSpec
from freeseg.modeling.heads import ContextInteraction, MaskFormerInteractionHead, build_sem_seg_head
from freeseg.utils.errors import FreeSegError


def _interaction(dropout: float = 0.1) -> ContextInteraction:
    torch.manual_seed(0)
    mod = ContextInteraction(q_dim=16, k_dim=12, embed_dim=24, num_heads=3, dropout=dropout)
    with torch.no_grad():  # non-trivial norms so that re-applying LN_k changes the result
        for ln in (mod.layer_norm_q_1, mod.layer_norm_k_1):
            ln.weight.uniform_(0.5, 2.0)
            ln.bias.normal_()
        mod.gamma.normal_(0.5, 0.2)
    return mod.eval()


def _maps(b: int = 2) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    ms = [torch.randn(b, 16, h, w, generator=g) for h, w in ((2, 3), (4, 6), (8, 12))]
    return ms, torch.randn(b, 16, 16, 24, generator=g), torch.randn(5, 12, generator=g)


def _reference(mod: ContextInteraction, x: torch.Tensor, text: torch.Tensor, n_ln: int) -> torch.Tensor:
    """The update written out with per-head loops (independent of the module's vectorised code)."""
    a = mod.attn
    for _ in range(n_ln):
        text = F.layer_norm(text, (12,), mod.layer_norm_k_1.weight, mod.layer_norm_k_1.bias)
    b, c, h, w = x.shape
    q = F.layer_norm(x.flatten(2).transpose(1, 2), (16,), mod.layer_norm_q_1.weight, mod.layer_norm_q_1.bias)
    qp, kp, vp = a.q_proj(q) / 8**0.5, a.k_proj(text), a.v_proj(text)  # head dim 24 / 3 = 8
    heads = []
    for i in range(3):
        s = slice(8 * i, 8 * (i + 1))
        heads.append(torch.softmax(qp[..., s] @ kp[..., s].T, dim=-1) @ vp[..., s])
    delta = a.out_proj(torch.cat(heads, -1))
    return (q + mod.gamma * delta).transpose(1, 2).reshape(b, c, h, w)


def test_cumulative_key_layernorm_and_normalised_residual() -> None:
    mod = _interaction()
    ms, mf, text = _maps()
    with torch.no_grad():
        out_ms, out_mf = mod(ms, mf, text)
        for i, (got, x) in enumerate(zip([*out_ms, out_mf], [*ms, mf])):
            torch.testing.assert_close(got, _reference(mod, x, text, n_ln=i + 1), atol=1e-5, rtol=0)
        # the quirk matters: a single LayerNorm would give a different mask-feature update
        assert (out_mf - _reference(mod, mf, text, n_ln=1)).abs().max() > 1e-3


def test_text_batch_expansion_and_dropout() -> None:
    mod = _interaction()
    ms, mf, text = _maps()
    with torch.no_grad():
        shared = mod(ms, mf, text)[1]
        per_image = mod(ms, mf, text.expand(2, -1, -1))[1]
        torch.testing.assert_close(shared, per_image)
        mod.train()
        torch.manual_seed(0)
        dropped = mod(ms, mf, text)[1]
        assert (dropped - shared).abs().max() > 1e-4  # dropout on the attention weights in training
        mod.attn.dropout = 0.0
        torch.testing.assert_close(mod(ms, mf, text)[1], shared)


def _tiny_head_cfg():
    cfg = get_cfg()
    h, m = cfg.MODEL.SEM_SEG_HEAD, cfg.MODEL.MASK_FORMER
    h.NAME, h.PIXEL_DECODER_NAME, h.IN_FEATURES = "MaskFormerInteractionHead", "MSDeformAttnPixelDecoder", [
        "res2", "res3", "res4", "res5"]
    h.CONVS_DIM = h.MASK_DIM = h.EMB_SIZE = m.HIDDEN_DIM = 32
    h.TRANSFORMER_ENC_LAYERS, h.EMBED_DIM, h.NUM_HEADS, h.DEFORMABLE_IMPL = 1, 32, 2, "pytorch"
    h.EMBEDDING_DIM, h.EMBED_HIDDEN_DIM, h.EMBED_LAYERS = 12, 16, 2
    cfg.MODEL.CLIP_ADAPTER.PROMPT_DIM = 12
    m.NHEADS, m.DIM_FEEDFORWARD, m.DEC_LAYERS, m.NUM_OBJECT_QUERIES = 4, 48, 2, 5
    m.TRANSFORMER_IN_FEATURE = "multi_scale_pixel_decoder"
    return cfg


SHAPES = {f"res{i}": ShapeSpec(channels=8 * i, stride=2**i) for i in range(2, 6)}


def test_head_encode_once_decode_per_text() -> None:
    torch.manual_seed(0)
    head = build_sem_seg_head(_tiny_head_cfg(), SHAPES).eval()
    assert isinstance(head, MaskFormerInteractionHead)
    assert tuple(head.state_dict()["interaction.attn.k_proj.weight"].shape) == (32, 12)
    g = torch.Generator().manual_seed(2)
    feats = {k: torch.randn(2, s.channels, 64 // s.stride, 96 // s.stride, generator=g) for k, s in SHAPES.items()}
    text_a, text_b = F.normalize(torch.randn(2, 7, 12, generator=g), dim=-1)
    with torch.no_grad():
        encoded = head.encode(feats)
        snapshot = encoded["mask_features"].clone()
        out_a = head.decode(encoded, text_a)
        out_b = head.decode(encoded, text_b)
        full = head(feats, text_a)
    assert torch.equal(encoded["mask_features"], snapshot)  # decode does not modify the encoding
    assert tuple(out_a["pred_logits"].shape) == (2, 5, 12) and tuple(out_a["pred_masks"].shape) == (2, 5, 16, 24)
    assert len(out_a["aux_outputs"]) == 2
    torch.testing.assert_close(full["pred_masks"], out_a["pred_masks"])
    assert (out_a["pred_masks"] - out_b["pred_masks"]).abs().max() > 1e-4  # the text conditions the masks
    with pytest.raises(FreeSegError, match="text_features"):
        head.decode(encoded, text_a[0])


def test_unknown_head_name() -> None:
    cfg = _tiny_head_cfg()
    cfg.MODEL.SEM_SEG_HEAD.NAME = "MaskFormerHead"
    with pytest.raises(FreeSegError, match="available: MaskFormerInteractionHead"):
        build_sem_seg_head(cfg, SHAPES)


@pytest.mark.parametrize("num_text", [3, 200])
def test_folded_and_plain_attention_agree(num_text: int) -> None:
    mod = _interaction().attn
    g = torch.Generator().manual_seed(4)
    q, k = torch.randn(2, 50, 16, generator=g), torch.randn(2, num_text, 12, generator=g)
    with torch.no_grad():
        torch.testing.assert_close(mod._forward_folded(q, k, k), mod._forward_plain(q, k, k), atol=1e-5, rtol=1e-5)
    # the cheaper one is chosen: q_dim 16, 3 heads of 8 -> folding pays off below T = 16 * 8 / (16 - 8)
    assert mod._fold_text_side(16, num_text) == (num_text < 16)
