"""A leaner forward of open_clip's ViT image tower, for scoring mask regions.

Scoring the 100 query regions of an image through a ViT-B/16 is most of FreeSeg's inference
time on a CPU. The matrix products there are already as fast as the BLAS gets them; what
this forward removes is the memory traffic around them, which open_clip's module-by-module
forward spends on full passes over the [B·197, 3072] MLP activations:

- QuickGELU ``x·σ(1.702x)`` is three passes (two multiplies and a sigmoid, each allocating);
  here the 1.702 goes into the ``c_fc`` GEMM's alpha/beta, ``silu`` runs in place, and the
  ``1/1.702`` goes into the ``c_proj`` GEMM's alpha: silu(1.702x)/1.702 = x·σ(1.702x);
- attention runs through ``scaled_dot_product_attention`` (a fused kernel) straight on the
  packed QKV projection, instead of ``nn.MultiheadAttention``'s unpacking, two batched
  products and a separate softmax;
- the last block computes only the class token's output, the one row the pooled feature
  reads: keys and values for every token, but the query, attention, output projection and MLP
  for one token instead of 197 (a ViT-B/16 does ~7 % fewer multiply-adds per region).

Same weights, same arithmetic up to float rounding (≤ 1e-5 relative on the features; tested
against open_clip's own forward). Nothing here is a library's job: open_clip and timm offer
no inference forward that fuses these, and ``torch.compile`` costs minutes of compilation
per input batch size on a small CPU.

Only plain CLIP towers take this path (class-token pooling, no layer scale, no attention
pooler, QuickGELU or GELU); anything else returns ``None`` and the caller uses open_clip.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from open_clip.transformer import QuickGELU, ResidualAttentionBlock, VisionTransformer
from torch import Tensor, nn

_QUICK_GELU = 1.702


def supports_fast_forward(visual: nn.Module) -> bool:
    """Whether :func:`fast_visual_forward` computes exactly what ``visual(x)`` computes."""
    if type(visual) is not VisionTransformer or visual.attn_pool is not None or visual.output_tokens:
        return False
    if getattr(visual, "pool_type", "tok") != "tok" or getattr(visual, "final_ln_after_pool", False):
        return False
    if visual.training and not isinstance(visual.patch_dropout, nn.Identity):
        return False
    if getattr(visual.transformer, "grad_checkpointing", False) and torch.is_grad_enabled():
        return False
    for block in visual.transformer.resblocks:
        if type(block) is not ResidualAttentionBlock or hasattr(block, "ln_1_kv"):
            return False
        if not (isinstance(block.ls_1, nn.Identity) and isinstance(block.ls_2, nn.Identity)):
            return False
        if type(block.mlp.gelu) not in (QuickGELU, nn.GELU) or getattr(block.mlp.gelu, "approximate", "none") != "none":
            return False
        if not block.attn._qkv_same_embed_dim or block.attn.in_proj_bias is None or block.attn.bias_k is not None:
            return False
    return True


def fast_visual_forward(visual: nn.Module, images: Tensor) -> Tensor | None:
    """``visual(images)`` of an open_clip ``VisionTransformer`` ([N, 3, S, S] -> [N, D]), or
    ``None`` if the tower is not a plain CLIP one (see :func:`supports_fast_forward`)."""
    if not supports_fast_forward(visual):
        return None
    x = visual._embeds(images)  # conv patches + class token + positions + ln_pre: [N, L, W]
    *blocks, last = visual.transformer.resblocks
    for block in blocks:
        x = _block(block, x)
    x = _block(last, x, class_token_only=True)  # [N, 1, W]
    pooled = visual.ln_post(x[:, 0])
    return pooled @ visual.proj if visual.proj is not None else pooled


def visual_forward(visual: nn.Module, images: Tensor) -> Tensor:
    """:func:`fast_visual_forward` where it applies, else the tower's own forward (open_clip's
    ``encode_image`` without normalisation)."""
    features = fast_visual_forward(visual, images)
    return visual(images) if features is None else features


def _block(block: ResidualAttentionBlock, x: Tensor, class_token_only: bool = False) -> Tensor:
    """One residual block on [N, L, W] tokens; with ``class_token_only`` it returns the class
    token's output alone, [N, 1, W] (every token still serves as key and value)."""
    n, length, width = x.shape
    attn = block.attn
    heads, head_dim = attn.num_heads, width // attn.num_heads
    x2 = x.reshape(n * length, width)

    h = F.layer_norm(x2, (width,), block.ln_1.weight, block.ln_1.bias, block.ln_1.eps)
    if class_token_only:
        w, b = attn.in_proj_weight, attn.in_proj_bias
        kv = torch.addmm(b[width:], h, w[width:].t())
        k, v = kv.view(n, length, 2, heads, head_dim).permute(2, 0, 3, 1, 4).unbind(0)  # [N, h, L, d]
        x2 = x[:, 0]  # [N, W]: the residual stream of the class token
        q = torch.addmm(b[:width], h.view(n, length, width)[:, 0], w[:width].t()).view(n, heads, 1, head_dim)
        length = 1
    else:
        qkv = torch.addmm(attn.in_proj_bias, h, attn.in_proj_weight.t())
        q, k, v = qkv.view(n, length, 3, heads, head_dim).permute(2, 0, 3, 1, 4).unbind(0)  # [N, h, L, d]
    o = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(n * length, width)
    x2 = x2 + torch.addmm(attn.out_proj.bias, o, attn.out_proj.weight.t())

    h = F.layer_norm(x2, (width,), block.ln_2.weight, block.ln_2.bias, block.ln_2.eps)
    fc, proj = block.mlp.c_fc, block.mlp.c_proj
    if isinstance(block.mlp.gelu, QuickGELU):
        # x·σ(1.702x) = silu(1.702x) / 1.702, with both scalings inside the GEMMs
        h = torch.addmm(fc.bias, h, fc.weight.t(), beta=_QUICK_GELU, alpha=_QUICK_GELU)
        h = F.silu(h, inplace=not h.requires_grad)  # (in place would break a backward through it)
        x2 = x2 + torch.addmm(proj.bias, h, proj.weight.t(), alpha=1.0 / _QUICK_GELU)
    else:
        h = F.gelu(torch.addmm(fc.bias, h, fc.weight.t()))
        x2 = x2 + torch.addmm(proj.bias, h, proj.weight.t())
    return x2.view(n, length, width)
