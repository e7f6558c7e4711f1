"""Multi-scale deformable attention (Deformable-DETR / Mask2Former): module, op and kernels.

``MSDeformAttn`` is the module; ``ms_deform_attn`` the op with a choice of implementation
(compiled C++/CUDA kernels from ``freeseg/layers/csrc`` built on first use, or the PyTorch
``grid_sample`` path ``ms_deform_attn_pytorch``). See docs/ms_deform_attn.md.
"""
from .extension import load_extension
from .function import IMPLS, MSDeformAttnFunction, compiled_available, ms_deform_attn
from .module import MSDeformAttn
from .pytorch_impl import ms_deform_attn_pytorch

__all__ = [
    "IMPLS",
    "MSDeformAttn",
    "MSDeformAttnFunction",
    "compiled_available",
    "load_extension",
    "ms_deform_attn",
    "ms_deform_attn_pytorch",
]
