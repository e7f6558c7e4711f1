// CUDA launchers for the deformable-attention kernels (ms_deform_attn_cuda.cu).
//
// Deliberately free of torch headers: the .cu file then compiles with plain nvcc in seconds,
// and the tensor handling stays in ms_deform_attn.cpp. Shapes and layout: see ms_deform_attn.h.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

struct MSDeformAttnDims {
  int64_t batch;     // N
  int64_t spatial;   // S
  int64_t heads;     // H
  int64_t channels;  // D, per head
  int64_t levels;    // L
  int64_t queries;   // Lq
  int64_t points;    // P
};

// output must be [N, Lq, H, D]; every element is written.
template <typename scalar_t>
cudaError_t ms_deform_attn_cuda_forward_launch(
    const scalar_t* value, const int64_t* spatial_shapes, const int64_t* level_start_index,
    const scalar_t* sampling_locations, const scalar_t* attention_weights, scalar_t* output,
    MSDeformAttnDims dims, cudaStream_t stream);

// grad_value must be zero-filled (it is accumulated with atomicAdd); grad_sampling_locations
// and grad_attention_weights are fully written.
template <typename scalar_t>
cudaError_t ms_deform_attn_cuda_backward_launch(
    const scalar_t* value, const int64_t* spatial_shapes, const int64_t* level_start_index,
    const scalar_t* sampling_locations, const scalar_t* attention_weights,
    const scalar_t* grad_output, scalar_t* grad_value, scalar_t* grad_sampling_locations,
    scalar_t* grad_attention_weights, MSDeformAttnDims dims, cudaStream_t stream);
