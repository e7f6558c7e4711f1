// Python bindings of the deformable-attention kernels, dispatching on the tensors' device.
//
// forward(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
//   -> output [N, Lq, H, D]
// backward(..., grad_output) -> [grad_value, grad_sampling_locations, grad_attention_weights]
// has_cuda() -> whether this build contains the CUDA kernels (built with -DWITH_CUDA).
#include <torch/extension.h>

#include <ATen/Parallel.h>

#include <mutex>
#include <set>

#include "ms_deform_attn.h"

#ifdef WITH_CUDA
// c10's stream/guard headers need only the CUDA runtime (ATen/cuda/CUDAContext.h would also
// pull in cuBLAS/cuSPARSE headers that a minimal toolkit lacks).
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "ms_deform_attn_cuda.h"

namespace {

MSDeformAttnDims cuda_dims(const at::Tensor& value, const at::Tensor& sampling_locations) {
  TORCH_CHECK(value.dim() == 4 && sampling_locations.dim() == 6,
              "ms_deform_attn: value must be [N, S, H, D], sampling_locations [N, Lq, H, L, P, 2]");
  return MSDeformAttnDims{value.size(0), value.size(1), value.size(2), value.size(3),
                          sampling_locations.size(3), sampling_locations.size(1), sampling_locations.size(4)};
}

void check_cuda_inputs(std::initializer_list<const at::Tensor*> tensors, const at::Tensor& value) {
  for (const auto* t : tensors) {
    TORCH_CHECK(t->is_cuda() && t->get_device() == value.get_device(),
                "ms_deform_attn: all inputs must be on the same CUDA device");
    TORCH_CHECK(t->is_contiguous(), "ms_deform_attn: inputs must be contiguous");
  }
}

at::Tensor cuda_forward(const at::Tensor& value, const at::Tensor& spatial_shapes, const at::Tensor& level_start_index,
                        const at::Tensor& sampling_locations, const at::Tensor& attention_weights) {
  check_cuda_inputs({&value, &spatial_shapes, &level_start_index, &sampling_locations, &attention_weights}, value);
  TORCH_CHECK(sampling_locations.scalar_type() == value.scalar_type() &&
                  attention_weights.scalar_type() == value.scalar_type(),
              "ms_deform_attn: value, sampling_locations and attention_weights must share a dtype");
  const c10::cuda::CUDAGuard guard(value.device());
  const auto dims = cuda_dims(value, sampling_locations);
  auto output = at::empty({dims.batch, dims.queries, dims.heads, dims.channels}, value.options());
  if (output.numel() == 0) return output;
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(value.scalar_type(), "ms_deform_attn_cuda_forward", [&] {
    const cudaError_t err = ms_deform_attn_cuda_forward_launch<scalar_t>(
        value.data_ptr<scalar_t>(), spatial_shapes.data_ptr<int64_t>(), level_start_index.data_ptr<int64_t>(),
        sampling_locations.data_ptr<scalar_t>(), attention_weights.data_ptr<scalar_t>(),
        output.data_ptr<scalar_t>(), dims, stream);
    TORCH_CHECK(err == cudaSuccess, "ms_deform_attn CUDA forward: ", cudaGetErrorString(err));
  });
  return output;
}

std::vector<at::Tensor> cuda_backward(const at::Tensor& value, const at::Tensor& spatial_shapes,
                                      const at::Tensor& level_start_index, const at::Tensor& sampling_locations,
                                      const at::Tensor& attention_weights, const at::Tensor& grad_output) {
  check_cuda_inputs({&value, &spatial_shapes, &level_start_index, &sampling_locations, &attention_weights,
                     &grad_output}, value);
  const c10::cuda::CUDAGuard guard(value.device());
  const auto dims = cuda_dims(value, sampling_locations);
  auto grad_value = at::zeros_like(value);
  auto grad_locations = at::zeros_like(sampling_locations);
  auto grad_weights = at::zeros_like(attention_weights);
  if (grad_output.numel() == 0) return {grad_value, grad_locations, grad_weights};
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(value.scalar_type(), "ms_deform_attn_cuda_backward", [&] {
    const cudaError_t err = ms_deform_attn_cuda_backward_launch<scalar_t>(
        value.data_ptr<scalar_t>(), spatial_shapes.data_ptr<int64_t>(), level_start_index.data_ptr<int64_t>(),
        sampling_locations.data_ptr<scalar_t>(), attention_weights.data_ptr<scalar_t>(),
        grad_output.data_ptr<scalar_t>(), grad_value.data_ptr<scalar_t>(), grad_locations.data_ptr<scalar_t>(),
        grad_weights.data_ptr<scalar_t>(), dims, stream);
    TORCH_CHECK(err == cudaSuccess, "ms_deform_attn CUDA backward: ", cudaGetErrorString(err));
  });
  return {grad_value, grad_locations, grad_weights};
}

}  // namespace
#endif  // WITH_CUDA

at::Tensor forward(const at::Tensor& value, const at::Tensor& spatial_shapes, const at::Tensor& level_start_index,
                   const at::Tensor& sampling_locations, const at::Tensor& attention_weights) {
  if (value.is_cuda()) {
#ifdef WITH_CUDA
    return cuda_forward(value, spatial_shapes, level_start_index, sampling_locations, attention_weights);
#else
    TORCH_CHECK(false, "ms_deform_attn: this build has no CUDA kernels");
#endif
  }
  return ms_deform_attn_cpu_forward(value, spatial_shapes, level_start_index, sampling_locations, attention_weights);
}

std::vector<at::Tensor> backward(const at::Tensor& value, const at::Tensor& spatial_shapes,
                                 const at::Tensor& level_start_index, const at::Tensor& sampling_locations,
                                 const at::Tensor& attention_weights, const at::Tensor& grad_output) {
  if (value.is_cuda()) {
#ifdef WITH_CUDA
    return cuda_backward(value, spatial_shapes, level_start_index, sampling_locations, attention_weights,
                         grad_output);
#else
    TORCH_CHECK(false, "ms_deform_attn: this build has no CUDA kernels");
#endif
  }
  return ms_deform_attn_cpu_backward(value, spatial_shapes, level_start_index, sampling_locations,
                                     attention_weights, grad_output);
}

bool has_cuda() {
#ifdef WITH_CUDA
  return true;
#else
  return false;
#endif
}

// How many threads at::parallel_for really uses here for `tasks` tasks of one element each. In
// an extension it runs them on one thread unless the extension itself is compiled and linked
// with OpenMP (torch's own build flag is not enough); the tests check the build did that.
int64_t parallel_threads(int64_t tasks) {
  std::mutex lock;
  std::set<int> seen;
  at::parallel_for(0, tasks, 1, [&](int64_t, int64_t) {
    const std::lock_guard<std::mutex> guard(lock);
    seen.insert(at::get_thread_num());
  });
  return static_cast<int64_t>(seen.size());
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "freeseg multi-scale deformable attention kernels (CPU, and CUDA when built with it)";
  m.def("forward", &forward, "deformable attention forward -> [N, Lq, H, D]");
  m.def("backward", &backward, "deformable attention backward -> [grad_value, grad_locations, grad_weights]");
  m.def("has_cuda", &has_cuda, "whether the CUDA kernels are compiled in");
  m.def("parallel_threads", &parallel_threads, "threads at::parallel_for uses for this many tasks");
}
