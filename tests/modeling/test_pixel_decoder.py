"""MSDeformAttnPixelDecoder: shapes, checkpoint names, FPN behaviour, builder keys."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from freeseg.config import get_cfg
from freeseg.layers import ShapeSpec
from freeseg.modeling.pixel_decoder import MSDeformAttnPixelDecoder, build_pixel_decoder
from freeseg.modeling.pixel_decoder.encoder import MSDeformAttnEncoder
from freeseg.utils.errors import FreeSegError

SHAPES = {
    "res2": ShapeSpec(channels=8, stride=4),
    "res3": ShapeSpec(channels=16, stride=8),
    "res4": ShapeSpec(channels=24, stride=16),
    "res5": ShapeSpec(channels=40, stride=32),
}


def _decoder(**kw) -> MSDeformAttnPixelDecoder:
    args = dict(
        transformer_dropout=0.0, transformer_nheads=2, transformer_dim_feedforward=48, transformer_enc_layers=2,
        conv_dim=32, mask_dim=20, norm="GN", transformer_in_features=["res3", "res4", "res5"], common_stride=4,
        deformable_impl="pytorch",
    )
    args.update(kw)
    torch.manual_seed(0)
    return MSDeformAttnPixelDecoder(SHAPES, **args).eval()


def _features(b: int = 2, h: int = 64, w: int = 96) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return {k: torch.randn(b, s.channels, h // s.stride, w // s.stride, generator=g) for k, s in SHAPES.items()}


def test_output_shapes_and_level_order() -> None:
    dec = _decoder()
    with torch.no_grad():
        mask_features, enc, multi = dec.forward_features(_features())
    assert tuple(mask_features.shape) == (2, 20, 16, 24)
    assert tuple(enc.shape) == (2, 32, 2, 3)
    assert [tuple(m.shape) for m in multi] == [(2, 32, 2, 3), (2, 32, 4, 6), (2, 32, 8, 12)]
    assert torch.equal(enc, multi[0])


def test_checkpoint_names_and_shapes() -> None:
    state = _decoder().state_dict()
    expected = {
        "input_proj.0.0.weight": (32, 40, 1, 1),  # coarse (res5) first
        "input_proj.2.0.weight": (32, 16, 1, 1),
        "input_proj.1.1.weight": (32,),
        "transformer.level_embed": (3, 32),
        "transformer.encoder.layers.1.self_attn.sampling_offsets.weight": (2 * 3 * 4 * 2, 32),
        "transformer.encoder.layers.0.linear1.weight": (48, 32),
        "transformer.encoder.layers.0.norm2.bias": (32,),
        "mask_features.weight": (20, 32, 1, 1),
        "adapter_1.weight": (32, 8, 1, 1),
        "adapter_1.norm.weight": (32,),
        "layer_1.weight": (32, 32, 3, 3),
        "layer_1.norm.bias": (32,),
    }
    for k, shape in expected.items():
        assert tuple(state[k].shape) == shape, k
    assert "adapter_1.bias" not in state and "layer_1.bias" not in state  # GN -> no conv bias
    assert not any(k.startswith(("lateral_convs", "output_convs", "pe_layer")) for k in state)


def test_fpn_level_is_lateral_plus_bilinear_upsample() -> None:
    dec = _decoder()
    feats = _features()
    captured = {}
    dec.layer_1.register_forward_hook(lambda m, i, o: captured.setdefault("in", i[0]))
    with torch.no_grad():
        _, _, multi = dec.forward_features(feats)
        expected = dec.adapter_1(feats["res2"]) + F.interpolate(multi[2], size=(16, 24), mode="bilinear",
                                                                  align_corners=False)
    torch.testing.assert_close(captured["in"], expected)


def test_encoder_reference_points_are_pixel_centres() -> None:
    ref = MSDeformAttnEncoder.reference_points(torch.tensor([[2, 4], [1, 2]]), batch=3, device=torch.device("cpu"))
    assert tuple(ref.shape) == (3, 10, 2, 2)
    torch.testing.assert_close(ref[0, 1, 0], torch.tensor([0.375, 0.25]))  # (x, y) of row 0, column 1 of 2x4
    torch.testing.assert_close(ref[2, 9, 1], torch.tensor([0.75, 0.5]))


def test_reference_points_are_the_originals_bit_for_bit() -> None:
    # the original builds them with linspace(0.5, n - 0.5, n); ours (arange + 0.5, exportable with
    # symbolic sizes) must give the same float32 values, and Python sizes the same as a tensor
    shapes = [(80, 120), (40, 60), (21, 33)]
    ours = MSDeformAttnEncoder.reference_points(shapes, batch=1, device=torch.device("cpu"))[0, :, 0]
    original = []
    for h, w in shapes:
        ys, xs = torch.meshgrid(torch.linspace(0.5, h - 0.5, h), torch.linspace(0.5, w - 0.5, w), indexing="ij")
        original.append(torch.stack((xs.reshape(-1) / w, ys.reshape(-1) / h), -1))
    assert torch.equal(ours, torch.cat(original))
    assert torch.equal(ours, MSDeformAttnEncoder.reference_points(torch.tensor(shapes), 1, torch.device("cpu"))[0, :, 0])


def test_batch_entries_are_independent() -> None:
    dec = _decoder()
    feats = _features(b=2)
    with torch.no_grad():
        both = dec.forward_features(feats)[0]
        first = dec.forward_features({k: v[:1] for k, v in feats.items()})[0]
    torch.testing.assert_close(both[:1], first, atol=1e-5, rtol=0)


def test_builder_reads_mask2former_keys_and_rejects_missing_features() -> None:
    cfg = get_cfg()
    h = cfg.MODEL.SEM_SEG_HEAD
    h.CONVS_DIM, h.MASK_DIM, h.TRANSFORMER_ENC_LAYERS, h.DEFORMABLE_IMPL = 32, 16, 1, "pytorch"
    h.PIXEL_DECODER_NAME = "MSDeformAttnPixelDecoder"
    with pytest.raises(FreeSegError, match=r"IN_FEATURES \['p2', 'p3', 'p4', 'p5'\] are not produced"):
        build_pixel_decoder(cfg, SHAPES)  # detectron2's default IN_FEATURES name FPN levels
    h.IN_FEATURES = ["res2", "res3", "res4", "res5"]
    cfg.MODEL.MASK_FORMER.NHEADS = 4
    dec = build_pixel_decoder(cfg, SHAPES)
    state = dec.state_dict()
    assert tuple(state["transformer.encoder.layers.0.linear1.weight"].shape) == (1024, 32)  # FreeSeg's fixed FFN
    assert tuple(state["transformer.encoder.layers.0.self_attn.attention_weights.weight"].shape) == (4 * 3 * 4, 32)
    assert "transformer.encoder.layers.1.norm1.weight" not in state
    with pytest.raises(FreeSegError, match=r"needs backbone features \['res5'\]"):
        MSDeformAttnPixelDecoder({k: v for k, v in SHAPES.items() if k != "res5"}, **{
            **dict(transformer_dropout=0.0, transformer_nheads=2, transformer_dim_feedforward=48,
                   transformer_enc_layers=1, conv_dim=32, mask_dim=20, norm="GN",
                   transformer_in_features=["res3", "res4", "res5"], common_stride=4)})
    # the kernel key is checked against the device when the model is built, naming the key
    cfg.MODEL.DEVICE, h.DEFORMABLE_IMPL = "cpu", "cuda"
    with pytest.raises(FreeSegError, match=r"^MODEL.SEM_SEG_HEAD.DEFORMABLE_IMPL 'cuda' does not run on "
                                           r"MODEL.DEVICE cpu; use one of auto, pytorch, cpu, cuda"):
        build_pixel_decoder(cfg, SHAPES)
    h.DEFORMABLE_IMPL = "triton"
    with pytest.raises(FreeSegError, match=r"^MODEL.SEM_SEG_HEAD.DEFORMABLE_IMPL 'triton' is unknown"):
        build_pixel_decoder(cfg, SHAPES)
    h.DEFORMABLE_IMPL = "pytorch"
    h.PIXEL_DECODER_NAME = "BasePixelDecoder"
    with pytest.raises(FreeSegError, match="MSDeformAttnPixelDecoder"):
        build_pixel_decoder(cfg, SHAPES)


def test_runs_in_float32_under_autocast() -> None:
    dec = _decoder()
    feats = _features(b=1)
    with torch.no_grad(), torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        mask_features, _, multi = dec.forward_features(feats)
    assert mask_features.dtype == torch.float32 and all(m.dtype == torch.float32 for m in multi)
    with torch.no_grad():
        torch.testing.assert_close(mask_features, dec.forward_features(feats)[0])
