// Multi-scale deformable attention kernels: shared declarations.
//
// Layout (all contiguous):
//   value              [N, S, H, D]   levels flattened row-major, concatenated along S
//   spatial_shapes     int64 [L, 2]   (height, width) per level
//   level_start_index  int64 [L]      offset of each level in S
//   sampling_locations [N, Lq, H, L, P, 2]  (x, y) in [0, 1]
//   attention_weights  [N, Lq, H, L, P]
//   output             [N, Lq, H, D]
// Sampling convention (= F.grid_sample, bilinear, zeros padding, align_corners=False):
// pixel coordinates h = y * height - 0.5, w = x * width - 0.5; corners outside read zero.
#pragma once

#include <ATen/ATen.h>

#include <vector>

at::Tensor ms_deform_attn_cpu_forward(
    const at::Tensor& value, const at::Tensor& spatial_shapes, const at::Tensor& level_start_index,
    const at::Tensor& sampling_locations, const at::Tensor& attention_weights);

// Returns {grad_value, grad_sampling_locations, grad_attention_weights}.
std::vector<at::Tensor> ms_deform_attn_cpu_backward(
    const at::Tensor& value, const at::Tensor& spatial_shapes, const at::Tensor& level_start_index,
    const at::Tensor& sampling_locations, const at::Tensor& attention_weights,
    const at::Tensor& grad_output);
