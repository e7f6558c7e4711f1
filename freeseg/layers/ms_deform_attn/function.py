"""Choosing a deformable-attention implementation, and the autograd wrapper of the compiled kernels."""
from __future__ import annotations

from types import ModuleType
from typing import Sequence

import torch
from torch.autograd.function import FunctionCtx, once_differentiable

from freeseg.utils.errors import FreeSegError

from .extension import load_extension
from .pytorch_impl import ms_deform_attn_pytorch

IMPLS = ("auto", "pytorch", "cpu", "cuda")
# The kernels are written for these; other dtypes (fp16/bf16 under autocast) are computed in
# float32 and cast back, as the original's CUDA op only handles float/double either.
_KERNEL_DTYPES = (torch.float32, torch.float64)


class MSDeformAttnFunction(torch.autograd.Function):
    """Autograd over the compiled forward/backward kernels (CPU or CUDA, picked by the tensors' device)."""

    @staticmethod
    def forward(
        ctx: FunctionCtx,
        ext: ModuleType,
        value: torch.Tensor,
        spatial_shapes: torch.Tensor,
        level_start_index: torch.Tensor,
        sampling_locations: torch.Tensor,
        attention_weights: torch.Tensor,
    ) -> torch.Tensor:
        ctx.ext = ext
        ctx.save_for_backward(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
        return ext.forward(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad_output: torch.Tensor):  # type: ignore[override]
        value, spatial_shapes, level_start_index, sampling_locations, attention_weights = ctx.saved_tensors
        grad_value, grad_locations, grad_weights = ctx.ext.backward(
            value, spatial_shapes, level_start_index, sampling_locations, attention_weights,
            grad_output.contiguous(),
        )
        return None, grad_value, None, None, grad_locations, grad_weights


def compiled_available(device: torch.device | str) -> bool:
    """Whether the compiled kernels can run on ``device`` (building them on first call)."""
    device = torch.device(device)
    if device.type == "cpu":
        return load_extension(with_cuda=None) is not None
    if device.type == "cuda":
        ext = load_extension(with_cuda=None)
        return ext is not None and bool(ext.has_cuda())
    return False


def _resolve(impl: str, device: torch.device) -> str:
    if impl not in IMPLS:
        raise FreeSegError(f"ms_deform_attn: unknown impl {impl!r}; use one of {', '.join(IMPLS)}")
    if impl == "auto":
        if device.type in ("cpu", "cuda") and compiled_available(device):
            return "compiled"
        return "pytorch"
    if impl == "pytorch":
        return "pytorch"
    if device.type != impl:
        raise FreeSegError(
            f"ms_deform_attn: impl={impl!r} but the tensors are on {device}; "
            f"move them to {impl} or use impl='auto'"
        )
    if not compiled_available(device):
        raise FreeSegError(
            f"ms_deform_attn: impl={impl!r} asked for, but the compiled {impl} kernel is not "
            "available; run `python -m freeseg.layers.ms_deform_attn.build` to see why, or use impl='auto'"
        )
    return "compiled"


def ms_deform_attn(
    value: torch.Tensor,
    spatial_shapes: torch.Tensor,
    level_start_index: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
    impl: str = "auto",
    level_shapes: Sequence[tuple[int, int]] | None = None,
) -> torch.Tensor:
    """Multi-scale deformable attention sampling with the chosen implementation.

    Args:
        value: [N, S, H, D].
        spatial_shapes: int64 [L, 2] of (height, width).
        level_start_index: int64 [L], offset of each level in S.
        sampling_locations: [N, Lq, H, L, P, 2] as (x, y) in [0, 1].
        attention_weights: [N, Lq, H, L, P].
        impl: ``"auto"`` (compiled kernel when it is available for the tensors' device, else
            PyTorch), ``"pytorch"``, ``"cpu"`` or ``"cuda"`` (compiled kernel, or FreeSegError).
        level_shapes: ``spatial_shapes`` as Python numbers, for the PyTorch path (which then
            reads no tensor values), or None.

    Returns:
        [N, Lq, H*D], same as :func:`ms_deform_attn_pytorch`.
    """
    if _resolve(impl, value.device) == "pytorch":
        shapes = spatial_shapes if level_shapes is None else level_shapes
        return ms_deform_attn_pytorch(value, shapes, sampling_locations, attention_weights)
    ext = load_extension(with_cuda=None)
    out_dtype = torch.promote_types(value.dtype, sampling_locations.dtype)
    dtype = out_dtype if out_dtype in _KERNEL_DTYPES else torch.float32
    n, n_queries, n_heads = sampling_locations.shape[:3]
    output = MSDeformAttnFunction.apply(
        ext,
        value.to(dtype).contiguous(),
        spatial_shapes.to(device=value.device, dtype=torch.int64).contiguous(),
        level_start_index.to(device=value.device, dtype=torch.int64).contiguous(),
        sampling_locations.to(dtype).contiguous(),
        attention_weights.to(dtype).contiguous(),
    )
    return output.view(n, n_queries, -1).to(out_dtype)
