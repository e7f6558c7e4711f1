"""Masked-attention decoder: outputs, aux predictions, attention masks, FreeSeg's class MLP."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from freeseg.config import get_cfg
from freeseg.modeling.transformer_decoder import MultiScaleMaskedTransformerDecoder, build_transformer_decoder
from freeseg.utils.errors import FreeSegError


def _decoder(dec_layers: int = 4, in_channels: int = 32, **kw) -> MultiScaleMaskedTransformerDecoder:
    torch.manual_seed(0)
    args = dict(hidden_dim=32, num_queries=6, nheads=4, dim_feedforward=40, dec_layers=dec_layers, pre_norm=False,
                mask_dim=24, embedding_dim=16, embed_hidden_dim=20, embed_layers=2)
    args.update(kw)
    return MultiScaleMaskedTransformerDecoder(in_channels, **args).eval()


def _inputs(b: int = 2, c: int = 32, seed: int = 1) -> tuple[list[torch.Tensor], torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = [torch.randn(b, c, h, w, generator=g) for h, w in ((2, 3), (4, 6), (8, 12))]
    return x, torch.randn(b, 24, 16, 24, generator=g)


def test_outputs_and_aux_count() -> None:
    dec = _decoder(dec_layers=5)
    x, mf = _inputs()
    with torch.no_grad():
        out = dec(x, mf)
    assert tuple(out["pred_logits"].shape) == (2, 6, 16)  # class embeddings, not logits
    assert tuple(out["pred_masks"].shape) == (2, 6, 16, 24)
    assert len(out["aux_outputs"]) == 5  # DEC_LAYERS layers -> DEC_LAYERS aux (FreeSeg, no -1)
    assert all(tuple(a["pred_masks"].shape) == (2, 6, 16, 24) for a in out["aux_outputs"])
    state = dec.state_dict()
    assert tuple(state["class_embed.layers.0.weight"].shape) == (20, 32)
    assert tuple(state["class_embed.layers.1.weight"].shape) == (16, 20)
    assert tuple(state["mask_embed.layers.2.weight"].shape) == (24, 32)
    assert "transformer_cross_attention_layers.4.multihead_attn.in_proj_weight" in state
    assert not any(k.startswith("input_proj") for k in state)  # in_channels == hidden_dim: identity


def test_aux_zero_comes_from_the_queries_alone() -> None:
    dec = _decoder()
    x, mf = _inputs()
    x2, _ = _inputs(seed=5)
    with torch.no_grad():
        a = dec(x, mf)
        b = dec(x2, mf)
        queries = dec.decoder_norm(dec.query_feat.weight)
        expected_cls = dec.class_embed(queries)
        expected_mask = torch.einsum("qc,bchw->bqhw", dec.mask_embed(queries), mf)
    torch.testing.assert_close(a["aux_outputs"][0]["pred_logits"], expected_cls.expand(2, -1, -1))
    torch.testing.assert_close(a["aux_outputs"][0]["pred_masks"], expected_mask)
    torch.testing.assert_close(a["aux_outputs"][0]["pred_logits"], b["aux_outputs"][0]["pred_logits"])
    assert not torch.allclose(a["pred_logits"], b["pred_logits"])  # later layers do see the features


def test_attention_mask_from_previous_prediction() -> None:
    dec = _decoder()
    g = torch.Generator().manual_seed(3)
    output = torch.randn(6, 2, 32, generator=g)
    mf = torch.randn(2, 24, 16, 24, generator=g)
    with torch.no_grad():
        cls, masks, attn = dec.forward_prediction_heads(output, mf, (4, 6))
    assert attn.dtype == torch.bool and tuple(attn.shape) == (2 * 4, 6, 24)
    small = F.interpolate(masks, size=(4, 6), mode="bilinear", align_corners=False).sigmoid() < 0.5
    assert torch.equal(attn[0], small[0].flatten(1)) and torch.equal(attn[3], small[0].flatten(1))
    assert torch.equal(attn[4], small[1].flatten(1))  # heads of image 1 follow those of image 0


def test_fully_blocked_queries_see_everything() -> None:
    dec = _decoder(dec_layers=1)
    with torch.no_grad():  # every mask logit very negative -> every position blocked
        dec.mask_embed.layers[2].weight.zero_()
        dec.mask_embed.layers[2].bias.fill_(-1.0)
    x, mf = _inputs()
    mf = mf.abs() + 10
    with torch.no_grad():
        out = dec(x, mf)
        # reopened rows = plain cross-attention without a mask
        layer = dec.transformer_cross_attention_layers[0]
        src = (x[0].flatten(2) + dec.level_embed.weight[0][None, :, None]).permute(2, 0, 1)
        pos = dec.pe_layer(x[0]).flatten(2).permute(2, 0, 1)
        q0 = dec.query_feat.weight.unsqueeze(1).repeat(1, 2, 1)
        qpos = dec.query_embed.weight.unsqueeze(1).repeat(1, 2, 1)
        manual = dec.transformer_ffn_layers[0](dec.transformer_self_attention_layers[0](
            layer(q0, src, None, pos, qpos), qpos))
        expected = dec.class_embed(dec.decoder_norm(manual).transpose(0, 1))
    assert torch.isfinite(out["pred_logits"]).all()
    torch.testing.assert_close(out["pred_logits"], expected, atol=1e-5, rtol=0)


def test_input_projection_and_pre_norm_variant() -> None:
    dec = _decoder(in_channels=12, pre_norm=True)
    assert tuple(dec.state_dict()["input_proj.2.weight"].shape) == (32, 12, 1, 1)
    x, mf = _inputs(c=12)
    with torch.no_grad():
        assert torch.isfinite(dec(x, mf)["pred_masks"]).all()
    with pytest.raises(FreeSegError, match="3 feature maps"):
        dec(x[:2], mf)


def test_builder_uses_dec_layers_without_minus_one() -> None:
    cfg = get_cfg()
    m, h = cfg.MODEL.MASK_FORMER, cfg.MODEL.SEM_SEG_HEAD
    m.HIDDEN_DIM, m.NUM_OBJECT_QUERIES, m.NHEADS, m.DIM_FEEDFORWARD, m.DEC_LAYERS = 32, 5, 4, 64, 3
    h.MASK_DIM, h.EMBEDDING_DIM, h.EMBED_HIDDEN_DIM, h.EMBED_LAYERS = 32, 8, 16, 2
    dec = build_transformer_decoder(cfg, 32)
    assert dec.num_layers == 3 and len(dec.transformer_ffn_layers) == 3
    assert tuple(dec.class_embed.layers[1].weight.shape) == (8, 16)
    m.TRANSFORMER_DECODER_NAME = "StandardTransformerDecoder"
    with pytest.raises(FreeSegError, match="MultiScaleMaskedTransformerDecoder"):
        build_transformer_decoder(cfg, 32)
