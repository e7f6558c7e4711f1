// Multi-scale deformable attention on CUDA: forward and backward.
//
// One warp per (batch, query, head); lane i handles channels i, i+32, ... of the head, so the
// D channels of a value row (contiguous in [N, S, H, D]) are read and written coalesced.
// Backward: gradients of locations and weights are sums over channels, reduced with warp
// shuffles; grad_value receives scattered contributions from many queries, hence atomicAdd.
// Sampling convention and layout: see ms_deform_attn.h.
#include "ms_deform_attn_cuda.h"

namespace {

constexpr int kWarp = 32;
constexpr int kThreads = 256;  // 8 warps per block


// Bilinear corners of location (x, y) on a height x width map; false when all are outside.
template <typename scalar_t>
__device__ inline bool corners_at(scalar_t x, scalar_t y, int64_t height, int64_t width, int64_t index[4],
                                  scalar_t weight[4], scalar_t& dh, scalar_t& dw) {
  const scalar_t h_im = y * static_cast<scalar_t>(height) - scalar_t(0.5);
  const scalar_t w_im = x * static_cast<scalar_t>(width) - scalar_t(0.5);
  if (!(h_im > -1 && w_im > -1 && h_im < height && w_im < width)) return false;  // NaN-safe
  const int64_t h0 = static_cast<int64_t>(floor(h_im));
  const int64_t w0 = static_cast<int64_t>(floor(w_im));
  dh = h_im - static_cast<scalar_t>(h0);
  dw = w_im - static_cast<scalar_t>(w0);
  const scalar_t ih = 1 - dh, iw = 1 - dw;
  weight[0] = ih * iw;
  weight[1] = ih * dw;
  weight[2] = dh * iw;
  weight[3] = dh * dw;
  const bool top = h0 >= 0, bottom = h0 + 1 <= height - 1;
  const bool left = w0 >= 0, right = w0 + 1 <= width - 1;
  index[0] = (top && left) ? h0 * width + w0 : -1;
  index[1] = (top && right) ? h0 * width + w0 + 1 : -1;
  index[2] = (bottom && left) ? (h0 + 1) * width + w0 : -1;
  index[3] = (bottom && right) ? (h0 + 1) * width + w0 + 1 : -1;
  return true;
}

template <typename scalar_t>
__device__ inline scalar_t warp_sum(scalar_t x) {
  for (int offset = kWarp / 2; offset > 0; offset /= 2) x += __shfl_down_sync(0xffffffffu, x, offset);
  return x;  // complete in lane 0
}

template <typename scalar_t>
__global__ void forward_kernel(const scalar_t* __restrict__ value, const int64_t* __restrict__ shapes,
                               const int64_t* __restrict__ starts, const scalar_t* __restrict__ locations,
                               const scalar_t* __restrict__ weights, scalar_t* __restrict__ output,
                               const MSDeformAttnDims d) {
  const int64_t warp = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / kWarp;
  const int lane = threadIdx.x % kWarp;
  if (warp >= d.batch * d.queries * d.heads) return;  // uniform across the warp
  const int64_t h = warp % d.heads, n = warp / (d.heads * d.queries);
  const int64_t row = d.heads * d.channels;
  const scalar_t* value_nh = value + n * d.spatial * row + h * d.channels;
  const scalar_t* loc_base = locations + warp * d.levels * d.points * 2;
  const scalar_t* attn_base = weights + warp * d.levels * d.points;
  for (int64_t ch = lane; ch < d.channels; ch += kWarp) {
    scalar_t acc = 0;
    const scalar_t* loc = loc_base;
    const scalar_t* attn = attn_base;
    for (int64_t l = 0; l < d.levels; ++l) {
      const int64_t height = shapes[2 * l], width = shapes[2 * l + 1];
      const scalar_t* value_l = value_nh + starts[l] * row + ch;
      for (int64_t p = 0; p < d.points; ++p, loc += 2, ++attn) {
        int64_t index[4];
        scalar_t weight[4], dh, dw;
        if (!corners_at(loc[0], loc[1], height, width, index, weight, dh, dw)) continue;
        scalar_t sample = 0;
        for (int k = 0; k < 4; ++k)
          if (index[k] >= 0) sample += weight[k] * value_l[index[k] * row];
        acc += *attn * sample;
      }
    }
    output[warp * d.channels + ch] = acc;
  }
}

template <typename scalar_t>
__global__ void backward_kernel(const scalar_t* __restrict__ value, const int64_t* __restrict__ shapes,
                                const int64_t* __restrict__ starts, const scalar_t* __restrict__ locations,
                                const scalar_t* __restrict__ weights, const scalar_t* __restrict__ grad_output,
                                scalar_t* __restrict__ grad_value, scalar_t* __restrict__ grad_locations,
                                scalar_t* __restrict__ grad_weights, const MSDeformAttnDims d) {
  const int64_t warp = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / kWarp;
  const int lane = threadIdx.x % kWarp;
  if (warp >= d.batch * d.queries * d.heads) return;  // uniform: the shuffles below see full warps
  const int64_t h = warp % d.heads, n = warp / (d.heads * d.queries);
  const int64_t row = d.heads * d.channels;
  const int64_t offset_nh = n * d.spatial * row + h * d.channels;
  const scalar_t* g = grad_output + warp * d.channels;
  int64_t lp = warp * d.levels * d.points;  // index of (n, q, h, l, p) in the weights
  for (int64_t l = 0; l < d.levels; ++l) {
    const int64_t height = shapes[2 * l], width = shapes[2 * l + 1];
    const int64_t offset_l = offset_nh + starts[l] * row;
    for (int64_t p = 0; p < d.points; ++p, ++lp) {
      int64_t index[4];
      scalar_t weight[4], dh, dw;
      if (!corners_at(locations[2 * lp], locations[2 * lp + 1], height, width, index, weight, dh, dw)) continue;
      const scalar_t a = weights[lp], ih = 1 - dh, iw = 1 - dw;
      scalar_t g_attn = 0, g_h = 0, g_w = 0;
      for (int64_t ch = lane; ch < d.channels; ch += kWarp) {
        scalar_t v[4];
        for (int k = 0; k < 4; ++k) v[k] = index[k] >= 0 ? value[offset_l + index[k] * row + ch] : scalar_t(0);
        const scalar_t gc = g[ch];
        g_attn += gc * (weight[0] * v[0] + weight[1] * v[1] + weight[2] * v[2] + weight[3] * v[3]);
        g_h += gc * (iw * (v[2] - v[0]) + dw * (v[3] - v[1]));
        g_w += gc * (ih * (v[1] - v[0]) + dh * (v[3] - v[2]));
        for (int k = 0; k < 4; ++k)
          if (index[k] >= 0) atomicAdd(grad_value + offset_l + index[k] * row + ch, a * weight[k] * gc);
      }
      g_attn = warp_sum(g_attn);
      g_h = warp_sum(g_h);
      g_w = warp_sum(g_w);
      if (lane == 0) {
        grad_weights[lp] = g_attn;
        grad_locations[2 * lp] = a * static_cast<scalar_t>(width) * g_w;
        grad_locations[2 * lp + 1] = a * static_cast<scalar_t>(height) * g_h;
      }
    }
  }
}

unsigned int blocks_for(const MSDeformAttnDims& d) {
  const int64_t threads = d.batch * d.queries * d.heads * kWarp;
  return static_cast<unsigned int>((threads + kThreads - 1) / kThreads);
}

}  // namespace

template <typename scalar_t>
cudaError_t ms_deform_attn_cuda_forward_launch(const scalar_t* value, const int64_t* spatial_shapes,
                                               const int64_t* level_start_index, const scalar_t* sampling_locations,
                                               const scalar_t* attention_weights, scalar_t* output,
                                               MSDeformAttnDims dims, cudaStream_t stream) {
  forward_kernel<scalar_t><<<blocks_for(dims), kThreads, 0, stream>>>(
      value, spatial_shapes, level_start_index, sampling_locations, attention_weights, output, dims);
  return cudaGetLastError();
}

template <typename scalar_t>
cudaError_t ms_deform_attn_cuda_backward_launch(const scalar_t* value, const int64_t* spatial_shapes,
                                                const int64_t* level_start_index, const scalar_t* sampling_locations,
                                                const scalar_t* attention_weights, const scalar_t* grad_output,
                                                scalar_t* grad_value, scalar_t* grad_sampling_locations,
                                                scalar_t* grad_attention_weights, MSDeformAttnDims dims,
                                                cudaStream_t stream) {
  backward_kernel<scalar_t><<<blocks_for(dims), kThreads, 0, stream>>>(
      value, spatial_shapes, level_start_index, sampling_locations, attention_weights, grad_output, grad_value,
      grad_sampling_locations, grad_attention_weights, dims);
  return cudaGetLastError();
}

template cudaError_t ms_deform_attn_cuda_forward_launch<float>(const float*, const int64_t*, const int64_t*,
                                                                const float*, const float*, float*,
                                                                MSDeformAttnDims, cudaStream_t);
template cudaError_t ms_deform_attn_cuda_forward_launch<double>(const double*, const int64_t*, const int64_t*,
                                                                 const double*, const double*, double*,
                                                                 MSDeformAttnDims, cudaStream_t);
template cudaError_t ms_deform_attn_cuda_backward_launch<float>(const float*, const int64_t*, const int64_t*,
                                                                 const float*, const float*, const float*, float*,
                                                                 float*, float*, MSDeformAttnDims, cudaStream_t);
template cudaError_t ms_deform_attn_cuda_backward_launch<double>(const double*, const int64_t*, const int64_t*,
                                                                  const double*, const double*, const double*,
                                                                  double*, double*, double*, MSDeformAttnDims,
                                                                  cudaStream_t);
