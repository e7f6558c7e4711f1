// Multi-scale deformable attention on CPU: forward and backward, multi-threaded with at::parallel_for.
//
// Forward parallelises over (batch, query): each task writes its own output rows.
// Backward parallelises over (batch, head group[, query chunk]): grad_value[n, :, heads, :]
// belongs to one task, so scattered writes never race and need no atomics; when there are fewer
// (batch, head) pairs than threads, queries are split into chunks that accumulate into private
// copies of grad_value, summed at the end (memory: one extra grad_value per extra chunk).
#include "ms_deform_attn.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>

namespace {

// Four bilinear corners of one sampling location on one level. Corners outside the map get a
// pointer to a zero row, so the channel loops below are branch-free and vectorise.
template <typename scalar_t>
struct Corners {
  int64_t index[4];   // position in the level (row-major), or -1 when outside
  scalar_t weight[4]; // (1-dh)(1-dw), (1-dh)dw, dh(1-dw), dh*dw
  scalar_t dh, dw;    // fractional parts of the pixel coordinates
};

// Returns false when the location is so far outside that all corners are outside.
template <typename scalar_t>
inline bool corners_at(scalar_t x, scalar_t y, int64_t height, int64_t width, Corners<scalar_t>& c) {
  const scalar_t h_im = y * static_cast<scalar_t>(height) - scalar_t(0.5);
  const scalar_t w_im = x * static_cast<scalar_t>(width) - scalar_t(0.5);
  // written so that NaN locations are outside too
  if (!(h_im > -1 && w_im > -1 && h_im < height && w_im < width)) return false;
  const int64_t h0 = static_cast<int64_t>(std::floor(h_im));
  const int64_t w0 = static_cast<int64_t>(std::floor(w_im));
  c.dh = h_im - static_cast<scalar_t>(h0);
  c.dw = w_im - static_cast<scalar_t>(w0);
  const scalar_t ih = 1 - c.dh, iw = 1 - c.dw;
  c.weight[0] = ih * iw;
  c.weight[1] = ih * c.dw;
  c.weight[2] = c.dh * iw;
  c.weight[3] = c.dh * c.dw;
  const bool top = h0 >= 0, bottom = h0 + 1 <= height - 1;
  const bool left = w0 >= 0, right = w0 + 1 <= width - 1;
  c.index[0] = (top && left) ? h0 * width + w0 : -1;
  c.index[1] = (top && right) ? h0 * width + w0 + 1 : -1;
  c.index[2] = (bottom && left) ? (h0 + 1) * width + w0 : -1;
  c.index[3] = (bottom && right) ? (h0 + 1) * width + w0 + 1 : -1;
  return true;
}

struct Dims {
  int64_t N, S, H, D, L, Lq, P;
};

template <typename scalar_t>
void forward_kernel(
    const scalar_t* __restrict__ value, const int64_t* shapes, const int64_t* starts,
    const scalar_t* __restrict__ locations, const scalar_t* __restrict__ weights,
    scalar_t* __restrict__ output, const Dims d) {
  const std::vector<scalar_t> zeros(d.D, scalar_t(0));
  const int64_t row = d.H * d.D;  // stride between positions in value
  const int64_t grain = std::max<int64_t>(1, 2048 / (d.H * d.L * d.P));
  at::parallel_for(0, d.N * d.Lq, grain, [&](int64_t begin, int64_t end) {
    Corners<scalar_t> c;
    for (int64_t nq = begin; nq < end; ++nq) {
      const scalar_t* value_n = value + (nq / d.Lq) * d.S * row;
      for (int64_t h = 0; h < d.H; ++h) {
        const int64_t nqh = nq * d.H + h;
        scalar_t* __restrict__ out = output + nqh * d.D;
        const scalar_t* loc = locations + nqh * d.L * d.P * 2;
        const scalar_t* attn = weights + nqh * d.L * d.P;
        for (int64_t l = 0; l < d.L; ++l) {
          const int64_t height = shapes[2 * l], width = shapes[2 * l + 1];
          const scalar_t* value_l = value_n + starts[l] * row + h * d.D;
          for (int64_t p = 0; p < d.P; ++p, loc += 2, ++attn) {
            if (!corners_at(loc[0], loc[1], height, width, c)) continue;
            const scalar_t* v[4];
            scalar_t w[4];
            for (int k = 0; k < 4; ++k) {
              v[k] = c.index[k] >= 0 ? value_l + c.index[k] * row : zeros.data();
              w[k] = *attn * c.weight[k];
            }
            for (int64_t ch = 0; ch < d.D; ++ch)
              out[ch] += w[0] * v[0][ch] + w[1] * v[1][ch] + w[2] * v[2][ch] + w[3] * v[3][ch];
          }
        }
      }
    }
  });
}

// <g, sample>, <g, d(sample)/dh>, <g, d(sample)/dw> over D channels for one location.
// A plain `sum += ...` loop stays scalar (the compiler may not reorder float additions), so we
// keep kLanes partial sums per product, which it vectorises; measured fastest of the variants
// tried (4 plain dots, 16 lanes, `omp simd` reductions).
template <typename scalar_t>
inline void dot_bilinear(const scalar_t* __restrict__ g, const scalar_t* const v[4], const Corners<scalar_t>& c,
                         int64_t channels, scalar_t& g_attn, scalar_t& g_h, scalar_t& g_w) {
  constexpr int kLanes = 8;
  const scalar_t ih = 1 - c.dh, iw = 1 - c.dw;
  scalar_t s_attn[kLanes] = {}, s_h[kLanes] = {}, s_w[kLanes] = {};
  int64_t ch = 0;
  for (; ch + kLanes <= channels; ch += kLanes) {
    for (int i = 0; i < kLanes; ++i) {
      const int64_t k = ch + i;
      const scalar_t v0 = v[0][k], v1 = v[1][k], v2 = v[2][k], v3 = v[3][k];
      s_attn[i] += g[k] * (c.weight[0] * v0 + c.weight[1] * v1 + c.weight[2] * v2 + c.weight[3] * v3);
      s_h[i] += g[k] * (iw * (v2 - v0) + c.dw * (v3 - v1));
      s_w[i] += g[k] * (ih * (v1 - v0) + c.dh * (v3 - v2));
    }
  }
  for (; ch < channels; ++ch) {
    const scalar_t v0 = v[0][ch], v1 = v[1][ch], v2 = v[2][ch], v3 = v[3][ch];
    s_attn[0] += g[ch] * (c.weight[0] * v0 + c.weight[1] * v1 + c.weight[2] * v2 + c.weight[3] * v3);
    s_h[0] += g[ch] * (iw * (v2 - v0) + c.dw * (v3 - v1));
    s_w[0] += g[ch] * (ih * (v1 - v0) + c.dh * (v3 - v2));
  }
  g_attn = g_h = g_w = 0;
  for (int i = 0; i < kLanes; ++i) {
    g_attn += s_attn[i];
    g_h += s_h[i];
    g_w += s_w[i];
  }
}

// One backward task: batch n, heads [h_begin, h_end), queries [q_begin, q_end), in query-major
// order so that the heads of one position (adjacent in memory) are read and written together.
// grad_value_n points at grad_value[n] of this task's accumulation buffer.
template <typename scalar_t>
void backward_task(
    const scalar_t* __restrict__ value, const int64_t* shapes, const int64_t* starts,
    const scalar_t* __restrict__ locations, const scalar_t* __restrict__ weights,
    const scalar_t* __restrict__ grad_output, scalar_t* __restrict__ grad_value_n,
    scalar_t* __restrict__ grad_locations, scalar_t* __restrict__ grad_weights,
    const scalar_t* zeros, const Dims d, int64_t n, int64_t h_begin, int64_t h_end,
    int64_t q_begin, int64_t q_end) {
  const int64_t row = d.H * d.D;
  const scalar_t* value_n = value + n * d.S * row;
  Corners<scalar_t> c;
  for (int64_t q = q_begin; q < q_end; ++q) {
    for (int64_t h = h_begin; h < h_end; ++h) {
      const int64_t nqh = (n * d.Lq + q) * d.H + h;
      const scalar_t* __restrict__ g = grad_output + nqh * d.D;
      const scalar_t* loc = locations + nqh * d.L * d.P * 2;
      const scalar_t* attn = weights + nqh * d.L * d.P;
      scalar_t* grad_loc = grad_locations + nqh * d.L * d.P * 2;
      scalar_t* grad_attn = grad_weights + nqh * d.L * d.P;
      for (int64_t l = 0; l < d.L; ++l) {
        const int64_t height = shapes[2 * l], width = shapes[2 * l + 1];
        const int64_t level_offset = starts[l] * row + h * d.D;
        for (int64_t p = 0; p < d.P; ++p, loc += 2, ++attn, grad_loc += 2, ++grad_attn) {
          if (!corners_at(loc[0], loc[1], height, width, c)) continue;
          const scalar_t* v[4];
          for (int k = 0; k < 4; ++k)
            v[k] = c.index[k] >= 0 ? value_n + level_offset + c.index[k] * row : zeros;
          scalar_t g_attn, g_h, g_w;
          dot_bilinear(g, v, c, d.D, g_attn, g_h, g_w);
          const scalar_t a = *attn;
          *grad_attn = g_attn;
          grad_loc[0] = a * static_cast<scalar_t>(width) * g_w;   // dw_im/dx = width
          grad_loc[1] = a * static_cast<scalar_t>(height) * g_h;  // dh_im/dy = height
          for (int k = 0; k < 4; ++k) {
            if (c.index[k] < 0) continue;
            scalar_t* __restrict__ dst = grad_value_n + level_offset + c.index[k] * row;
            const scalar_t w = a * c.weight[k];
            for (int64_t ch = 0; ch < d.D; ++ch) dst[ch] += w * g[ch];
          }
        }
      }
    }
  }
}

Dims check_inputs(
    const at::Tensor& value, const at::Tensor& spatial_shapes, const at::Tensor& level_start_index,
    const at::Tensor& sampling_locations, const at::Tensor& attention_weights) {
  TORCH_CHECK(value.dim() == 4, "ms_deform_attn: value must be [N, S, H, D]");
  TORCH_CHECK(sampling_locations.dim() == 6 && sampling_locations.size(5) == 2,
              "ms_deform_attn: sampling_locations must be [N, Lq, H, L, P, 2]");
  const Dims d{value.size(0), value.size(1), value.size(2), value.size(3),
               sampling_locations.size(3), sampling_locations.size(1), sampling_locations.size(4)};
  TORCH_CHECK(sampling_locations.size(0) == d.N && sampling_locations.size(2) == d.H,
              "ms_deform_attn: sampling_locations batch/heads do not match value");
  TORCH_CHECK(attention_weights.sizes() == sampling_locations.sizes().slice(0, 5),
              "ms_deform_attn: attention_weights must be [N, Lq, H, L, P]");
  TORCH_CHECK(spatial_shapes.dim() == 2 && spatial_shapes.size(0) == d.L && spatial_shapes.size(1) == 2,
              "ms_deform_attn: spatial_shapes must be [L, 2]");
  TORCH_CHECK(level_start_index.dim() == 1 && level_start_index.size(0) == d.L,
              "ms_deform_attn: level_start_index must be [L]");
  for (const auto* t : {&value, &spatial_shapes, &level_start_index, &sampling_locations, &attention_weights})
    TORCH_CHECK(t->is_contiguous(), "ms_deform_attn: inputs must be contiguous");
  TORCH_CHECK(spatial_shapes.scalar_type() == at::kLong && level_start_index.scalar_type() == at::kLong,
              "ms_deform_attn: spatial_shapes and level_start_index must be int64");
  TORCH_CHECK(sampling_locations.scalar_type() == value.scalar_type() &&
                  attention_weights.scalar_type() == value.scalar_type(),
              "ms_deform_attn: value, sampling_locations and attention_weights must share a dtype");
  return d;
}

void check_levels_fit(const at::Tensor& spatial_shapes, const at::Tensor& level_start_index, const Dims& d) {
  // A level reaching past S would read out of bounds: refuse it on CPU where checking is free.
  const int64_t* shapes = spatial_shapes.data_ptr<int64_t>();
  const int64_t* starts = level_start_index.data_ptr<int64_t>();
  for (int64_t l = 0; l < d.L; ++l)
    TORCH_CHECK(shapes[2 * l] >= 0 && shapes[2 * l + 1] >= 0 && starts[l] >= 0 &&
                    starts[l] + shapes[2 * l] * shapes[2 * l + 1] <= d.S,
                "ms_deform_attn: level ", l, " (", shapes[2 * l], "x", shapes[2 * l + 1], " at ", starts[l],
                ") does not fit in value's S=", d.S);
}

}  // namespace

at::Tensor ms_deform_attn_cpu_forward(
    const at::Tensor& value, const at::Tensor& spatial_shapes, const at::Tensor& level_start_index,
    const at::Tensor& sampling_locations, const at::Tensor& attention_weights) {
  const Dims d = check_inputs(value, spatial_shapes, level_start_index, sampling_locations, attention_weights);
  check_levels_fit(spatial_shapes, level_start_index, d);
  auto output = at::zeros({d.N, d.Lq, d.H, d.D}, value.options());
  AT_DISPATCH_FLOATING_TYPES(value.scalar_type(), "ms_deform_attn_cpu_forward", [&] {
    forward_kernel<scalar_t>(
        value.data_ptr<scalar_t>(), spatial_shapes.data_ptr<int64_t>(), level_start_index.data_ptr<int64_t>(),
        sampling_locations.data_ptr<scalar_t>(), attention_weights.data_ptr<scalar_t>(),
        output.data_ptr<scalar_t>(), d);
  });
  return output;
}

std::vector<at::Tensor> ms_deform_attn_cpu_backward(
    const at::Tensor& value, const at::Tensor& spatial_shapes, const at::Tensor& level_start_index,
    const at::Tensor& sampling_locations, const at::Tensor& attention_weights,
    const at::Tensor& grad_output) {
  const Dims d = check_inputs(value, spatial_shapes, level_start_index, sampling_locations, attention_weights);
  check_levels_fit(spatial_shapes, level_start_index, d);
  TORCH_CHECK(grad_output.is_contiguous() && grad_output.numel() == d.N * d.Lq * d.H * d.D &&
                  grad_output.scalar_type() == value.scalar_type(),
              "ms_deform_attn: grad_output must be a contiguous [N, Lq, H*D] of value's dtype");
  auto grad_value = at::zeros_like(value);
  auto grad_locations = at::zeros_like(sampling_locations);
  auto grad_weights = at::zeros_like(attention_weights);
  // Tasks: (batch, head group, query chunk). Different batches or head groups write disjoint
  // parts of grad_value, so we first split heads (free), and only when N*H tasks cannot keep
  // every thread busy split queries too, each extra chunk accumulating into a private copy of
  // grad_value that is summed at the end. Fewer heads per task means strided, less
  // cache-friendly access, so heads are split no finer than needed.
  const int64_t threads = at::get_num_threads();
  const int64_t groups = std::min<int64_t>(d.H, (threads + d.N - 1) / d.N);
  const int64_t heads_per_group = (d.H + groups - 1) / groups;
  const int64_t chunks = std::max<int64_t>(
      1, std::min<int64_t>((threads + d.N * groups - 1) / (d.N * groups), d.Lq / 256));
  const int64_t chunk_len = (d.Lq + chunks - 1) / chunks;
  at::Tensor extra;  // private grad_value copies for chunks 1..chunks-1
  if (chunks > 1) extra = at::zeros({chunks - 1, d.N, d.S, d.H, d.D}, value.options());
  AT_DISPATCH_FLOATING_TYPES(value.scalar_type(), "ms_deform_attn_cpu_backward", [&] {
    const std::vector<scalar_t> zeros(d.D, scalar_t(0));
    scalar_t* extra_ptr = chunks > 1 ? extra.data_ptr<scalar_t>() : nullptr;
    const int64_t per_batch = d.S * d.H * d.D;
    at::parallel_for(0, d.N * groups * chunks, 1, [&](int64_t begin, int64_t end) {
      for (int64_t task = begin; task < end; ++task) {
        const int64_t chunk = task / (d.N * groups), n = (task / groups) % d.N, group = task % groups;
        scalar_t* buffer = chunk == 0 ? grad_value.data_ptr<scalar_t>() : extra_ptr + (chunk - 1) * d.N * per_batch;
        backward_task<scalar_t>(
            value.data_ptr<scalar_t>(), spatial_shapes.data_ptr<int64_t>(),
            level_start_index.data_ptr<int64_t>(), sampling_locations.data_ptr<scalar_t>(),
            attention_weights.data_ptr<scalar_t>(), grad_output.data_ptr<scalar_t>(), buffer + n * per_batch,
            grad_locations.data_ptr<scalar_t>(), grad_weights.data_ptr<scalar_t>(), zeros.data(), d, n,
            group * heads_per_group, std::min(d.H, (group + 1) * heads_per_group), chunk * chunk_len,
            std::min(d.Lq, (chunk + 1) * chunk_len));
      }
    });
  });
  if (chunks > 1) grad_value.add_(extra.sum(0));
  return {grad_value, grad_locations, grad_weights};
}
