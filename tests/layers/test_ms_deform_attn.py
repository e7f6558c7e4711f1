"""Multi-scale deformable attention: sampling convention, module, compiled kernels, fallback, CUDA source."""
from __future__ import annotations

import math
import re
import shutil
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import pytest
import torch

from freeseg.layers.ms_deform_attn import MSDeformAttn, ms_deform_attn, ms_deform_attn_pytorch
from freeseg.layers.ms_deform_attn import extension
from freeseg.utils.errors import FreeSegError

REPO = Path(__file__).resolve().parents[2]
CSRC = REPO / "freeseg" / "layers" / "csrc"


def make_inputs(
    n: int = 2, heads: int = 3, dim: int = 5, levels=((6, 7), (3, 4), (2, 2)), queries: int = 9,
    points: int = 3, dtype: torch.dtype = torch.float32, seed: int = 0,
) -> tuple[torch.Tensor, ...]:
    """value, shapes, starts, locations, weights; locations spill past [0, 1] to test the zero padding."""
    gen = torch.Generator().manual_seed(seed)
    shapes = torch.tensor(levels, dtype=torch.int64)
    areas = shapes[:, 0] * shapes[:, 1]
    starts = torch.cat([areas.new_zeros(1), areas.cumsum(0)[:-1]])
    value = torch.randn(n, int(areas.sum()), heads, dim, generator=gen, dtype=dtype)
    locations = torch.rand(n, queries, heads, len(levels), points, 2, generator=gen, dtype=dtype) * 1.4 - 0.2
    weights = torch.rand(n, queries, heads, len(levels), points, generator=gen, dtype=dtype)
    return value, shapes, starts, locations, weights


def naive_sample(value_l: torch.Tensor, x: float, y: float) -> torch.Tensor:
    """Bilinear sample of value_l [h, w, D] at (x, y) in [0, 1], pixel centres at (i + 0.5) / size, zeros outside."""
    h, w, _ = value_l.shape
    px, py = x * w - 0.5, y * h - 0.5
    x0, y0 = math.floor(px), math.floor(py)
    out = torch.zeros(value_l.shape[-1], dtype=value_l.dtype)
    for yy, wy in ((y0, 1 - (py - y0)), (y0 + 1, py - y0)):
        for xx, wx in ((x0, 1 - (px - x0)), (x0 + 1, px - x0)):
            if 0 <= yy < h and 0 <= xx < w:
                out += wy * wx * value_l[yy, xx]
    return out


@pytest.fixture(scope="module")
def ext():
    module = extension.load_extension(with_cuda=False)
    if module is None:
        pytest.skip("compiled ms_deform_attn kernels could not be built here (no working C++ compiler?)")
    return module


def run_with_grads(impl: str, inputs: tuple[torch.Tensor, ...], grad_seed: int = 1) -> list[torch.Tensor]:
    value, shapes, starts, locations, weights = (t.clone() for t in inputs)
    leaves = [t.requires_grad_() for t in (value, locations, weights)]
    out = ms_deform_attn(value, shapes, starts, locations, weights, impl=impl)
    grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(grad_seed), dtype=out.dtype)
    out.backward(grad)
    return [out.detach()] + [t.grad for t in leaves]


def test_pytorch_path_matches_naive_bilinear_sampling():
    value, shapes, starts, locations, weights = make_inputs(n=1, heads=2, dim=3, queries=4, points=2, dtype=torch.float64)
    out = ms_deform_attn_pytorch(value, shapes, locations, weights).view(1, 4, 2, 3)
    expected = torch.zeros_like(out)
    for q in range(4):
        for h in range(2):
            for lvl, (lh, lw) in enumerate(shapes.tolist()):
                value_l = value[0, starts[lvl] : starts[lvl] + lh * lw, h].view(lh, lw, 3)
                for p in range(2):
                    x, y = locations[0, q, h, lvl, p].tolist()
                    expected[0, q, h] += weights[0, q, h, lvl, p] * naive_sample(value_l, x, y)
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("dim", [5, 32])
def test_compiled_cpu_matches_pytorch_forward_and_grads(ext, dim):
    inputs = make_inputs(dim=dim)
    reference = run_with_grads("pytorch", inputs)
    compiled = run_with_grads("cpu", inputs)
    for name, ref, got in zip(["output", "value", "locations", "weights"], reference, compiled):
        # location gradients scale with the level size, so compare relative to their magnitude
        torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5, msg=lambda m: f"{name}: {m}")


@pytest.mark.skipif(not torch.backends.openmp.is_available(), reason="torch built without OpenMP")
def test_compiled_kernels_use_several_threads(ext):
    # at::parallel_for in an extension built without OpenMP runs every task on one thread
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert ext.parallel_threads(16) == 2
        torch.set_num_threads(1)
        assert ext.parallel_threads(16) == 1
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize(
    "sizes",
    [
        # tasks run concurrently: forward rows per query, backward per (batch, head) pair
        dict(n=2, heads=4, dim=8, queries=300, points=2),
        # one batch and one head: the backward splits queries into chunks with private
        # grad_value buffers that must add up to the same gradient
        dict(n=1, heads=1, dim=8, queries=600, points=2),
    ],
    ids=["batch-head-tasks", "query-chunks"],
)
def test_compiled_on_two_threads_matches_pytorch(ext, sizes):
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        inputs = make_inputs(**sizes)
        reference = run_with_grads("pytorch", inputs)
        compiled = run_with_grads("cpu", inputs)
    finally:
        torch.set_num_threads(threads)
    for ref, got in zip(reference, compiled):
        torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("impl", ["pytorch", "cpu"])
def test_gradcheck_float64(impl, request):
    if impl == "cpu":
        request.getfixturevalue("ext")
    value, shapes, starts, locations, weights = make_inputs(
        n=1, heads=2, dim=3, levels=((3, 4), (2, 2)), queries=2, points=2, dtype=torch.float64
    )
    # keep locations off the pixel grid's kinks (integer pixel coordinates) for finite differences
    locations = (locations * 0.9 + 0.05).requires_grad_()
    value.requires_grad_()
    weights.requires_grad_()
    fn = lambda v, loc, w: ms_deform_attn(v, shapes, starts, loc, w, impl=impl)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (value, locations, weights), eps=1e-6, atol=1e-5)


def test_compiled_handles_half_precision_inputs(ext):
    value, shapes, starts, locations, weights = make_inputs()
    out = ms_deform_attn(value.bfloat16(), shapes, starts, locations.bfloat16(), weights.bfloat16(), impl="cpu")
    assert out.dtype == torch.bfloat16
    expected = ms_deform_attn_pytorch(value.bfloat16().float(), shapes, locations.bfloat16().float(), weights.bfloat16().float())
    torch.testing.assert_close(out.float(), expected, rtol=1e-2, atol=1e-2)


def test_kernel_rejects_levels_outside_value(ext):
    value, shapes, starts, locations, weights = make_inputs()
    with pytest.raises(RuntimeError, match="does not fit"):
        ext.forward(value, shapes, starts + 5, locations, weights)


def test_module_parameters_and_init_match_mask2former():
    m = MSDeformAttn(d_model=64, n_levels=3, n_heads=4, n_points=2, impl="pytorch")
    shapes = {k: tuple(v.shape) for k, v in m.state_dict().items()}
    assert shapes == {
        "sampling_offsets.weight": (48, 64), "sampling_offsets.bias": (48,),
        "attention_weights.weight": (24, 64), "attention_weights.bias": (24,),
        "value_proj.weight": (64, 64), "value_proj.bias": (64,),
        "output_proj.weight": (64, 64), "output_proj.bias": (64,),
    }
    bias = m.sampling_offsets.bias.view(4, 3, 2, 2)  # heads, levels, points, (x, y)
    # head k points along angle 2πk/4, scaled so the larger coordinate is 1, point i at i+1
    torch.testing.assert_close(bias[:, 0, 0], torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]]), atol=1e-6, rtol=0)
    torch.testing.assert_close(bias[:, :, 1], 2 * bias[:, :, 0])
    assert torch.equal(bias[:, 0], bias[:, 2])
    assert m.sampling_offsets.weight.abs().sum() == 0 and m.attention_weights.weight.abs().sum() == 0


def _module_inputs(n: int = 2, c: int = 32, levels=((6, 5), (3, 3))):
    gen = torch.Generator().manual_seed(3)
    shapes = torch.tensor(levels)
    areas = shapes[:, 0] * shapes[:, 1]
    starts = torch.cat([areas.new_zeros(1), areas.cumsum(0)[:-1]])
    s = int(areas.sum())
    x = torch.randn(n, s, c, generator=gen)
    reference = torch.rand(n, 7, len(levels), 2, generator=gen)
    return x[:, :7], reference, x, shapes, starts


def test_module_padding_mask_hides_padded_values():
    torch.manual_seed(0)
    m = MSDeformAttn(d_model=32, n_levels=2, n_heads=4, n_points=3, impl="pytorch")
    torch.nn.init.normal_(m.sampling_offsets.weight, std=0.5)
    query, reference, x, shapes, starts = _module_inputs()
    mask = torch.zeros(x.shape[:2], dtype=torch.bool)
    mask[:, 20:] = True
    changed = x.clone()
    changed[:, 20:] += 100.0
    out = m(query, reference, x, shapes, starts, mask)
    torch.testing.assert_close(m(query, reference, changed, shapes, starts, mask), out)
    assert not torch.allclose(m(query, reference, changed, shapes, starts, None), out)


@pytest.mark.parametrize("ref_dim", [2, 4])
def test_module_compiled_and_pytorch_agree(ext, ref_dim):
    torch.manual_seed(0)
    m = MSDeformAttn(d_model=32, n_levels=2, n_heads=4, n_points=3, impl="pytorch")
    torch.nn.init.normal_(m.sampling_offsets.weight, std=0.5)
    query, reference, x, shapes, starts = _module_inputs()
    if ref_dim == 4:
        reference = torch.cat([reference, torch.rand_like(reference) * 0.5], -1)
    out_pytorch = m(query, reference, x, shapes, starts)
    m.impl = "cpu"
    torch.testing.assert_close(m(query, reference, x, shapes, starts), out_pytorch, rtol=1e-5, atol=1e-5)


def test_module_rejects_bad_shapes_and_impl():
    with pytest.raises(FreeSegError, match="divisible"):
        MSDeformAttn(d_model=30, n_heads=8)
    with pytest.raises(FreeSegError, match="unknown impl"):
        MSDeformAttn(impl="triton")
    m = MSDeformAttn(d_model=32, n_levels=2, n_heads=4, n_points=3, impl="pytorch")
    query, reference, x, shapes, starts = _module_inputs()
    with pytest.raises(FreeSegError, match="cover 39 positions"):
        m(query, reference, x[:, :-1], shapes, starts)
    with pytest.raises(FreeSegError, match="reference_points"):
        m(query, reference[..., :1], x, shapes, starts)


def test_explicit_cuda_impl_on_cpu_tensors_is_a_clear_error():
    with pytest.raises(FreeSegError, match="impl='cuda' but the tensors are on cpu"):
        ms_deform_attn(*make_inputs(), impl="cuda")


@pytest.fixture
def fresh_extension_state(monkeypatch):
    """Forget the loaded extension for one test, then restore the real state."""
    saved = dict(extension._cache), extension._warned
    extension.reset_cache()
    monkeypatch.delenv("FREESEG_DISABLE_EXT", raising=False)
    yield
    extension._cache.clear()
    extension._cache.update(saved[0])
    extension._warned = saved[1]


def test_failed_build_falls_back_with_one_warning(fresh_extension_state, monkeypatch):
    calls = []

    def failing_build(with_cuda: bool, verbose: bool = False):
        calls.append(with_cuda)
        raise OSError("simulated: c++ not found")

    monkeypatch.setattr(extension, "build", failing_build)
    inputs = make_inputs()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        outs = [ms_deform_attn(*inputs, impl="auto") for _ in range(3)]
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(messages) == 1 and "simulated: c++ not found" in messages[0] and "PyTorch path" in messages[0]
    assert len(calls) == 1  # the failure is remembered, not retried per call
    expected = ms_deform_attn_pytorch(inputs[0], inputs[1], inputs[3], inputs[4])
    for out in outs:
        torch.testing.assert_close(out, expected, rtol=0, atol=0)
    with pytest.raises(FreeSegError, match="compiled cpu kernel is not available"):
        ms_deform_attn(*inputs, impl="cpu")


def test_build_without_openmp_support_falls_back_to_one_thread(tmp_path, monkeypatch):
    # a compiler that rejects -fopenmp (clang without libomp): the kernels are still built,
    # without it, with one warning, and later builds do not try OpenMP again
    loads = []

    class FakeCppExtension:
        @staticmethod
        def load(**kwargs):
            loads.append(kwargs)
            if "-fopenmp" in kwargs["extra_cflags"]:
                raise RuntimeError("clang: error: unsupported option '-fopenmp'")
            return "the module"

    monkeypatch.setenv("FREESEG_EXT_DIR", str(tmp_path))
    monkeypatch.setattr(extension, "_cpp_extension", lambda: FakeCppExtension)
    monkeypatch.setattr(extension, "openmp_flags", lambda: ["-fopenmp"])
    with pytest.warns(RuntimeWarning, match="built without OpenMP .*unsupported option.* run on one thread"):
        assert extension.build(with_cuda=False) == "the module"
    assert [c["extra_ldflags"] for c in loads] == [["-fopenmp"], []]
    markers = list(tmp_path.glob(f"*/{extension.NO_OPENMP_MARKER}"))
    assert len(markers) == 1 and "unsupported option" in markers[0].read_text()
    loads.clear()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert extension.build(with_cuda=False) == "the module"
    assert [c["extra_cflags"].count("-fopenmp") for c in loads] == [0]


def test_disable_env_skips_build_silently(fresh_extension_state, monkeypatch):
    monkeypatch.setenv("FREESEG_DISABLE_EXT", "1")
    monkeypatch.setattr(extension, "build", lambda *a, **k: pytest.fail("build must not run"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = ms_deform_attn(*make_inputs(), impl="auto")
    assert out.shape == (2, 9, 15)


def test_build_lock_serialises_builders(tmp_path):
    lock = tmp_path / "ext" / "freeseg.lock"
    events: list[str] = []
    entered = threading.Event()

    def second() -> None:
        entered.wait()
        with extension._file_lock(lock):
            events.append("second")

    thread = threading.Thread(target=second)
    with extension._file_lock(lock):
        thread.start()
        entered.set()
        time.sleep(0.3)  # the second builder must still be waiting
        events.append("first done")
    thread.join(timeout=10)
    assert events == ["first done", "second"]


def test_ahead_of_time_build_command(ext):
    # the module fixture built into the default cache, so this only checks and loads it
    result = subprocess.run(
        [sys.executable, "-m", "freeseg.layers.ms_deform_attn.build", "--cpu-only"],
        capture_output=True, text=True, cwd=REPO, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "ok:" in result.stdout and "CUDA kernels: no" in result.stdout
    used, available = map(int, re.search(r"CPU kernels on (\d+) of (\d+) threads", result.stdout).groups())
    assert used == (available if torch.backends.openmp.is_available() else 1)


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not on PATH")
def test_cuda_kernels_compile_with_nvcc(tmp_path):
    obj = tmp_path / "ms_deform_attn_cuda.o"
    result = subprocess.run(
        ["nvcc", "-c", "-O3", "-std=c++17", str(CSRC / "ms_deform_attn_cuda.cu"), "-o", str(obj)],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    symbols = subprocess.run(["nm", "-C", str(obj)], capture_output=True, text=True).stdout
    for name in ("ms_deform_attn_cuda_forward_launch<float>", "ms_deform_attn_cuda_backward_launch<double>"):
        assert name in symbols


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not on PATH")
def test_cuda_bindings_compile_with_cuda_enabled(tmp_path):
    """The host-side CUDA glue (only built with -DWITH_CUDA) compiles against torch's headers."""
    from torch.utils import cpp_extension
    import sysconfig

    candidates = [Path(p) / "include" for p in (cpp_extension.CUDA_HOME, "/usr/local/cuda") if p]
    candidates.append(Path(shutil.which("nvcc")).resolve().parents[1] / "include")
    found = [p for p in candidates if (p / "cuda_runtime.h").exists()]
    if not found:
        pytest.skip(f"cuda_runtime.h not found in {candidates}")
    cuda_include = found[0]
    includes = [f"-I{p}" for p in cpp_extension.include_paths()] + [f"-I{cuda_include}", f"-I{sysconfig.get_paths()['include']}"]
    cmd = [shutil.which("c++") or "g++", "-std=c++20", "-fPIC", "-fsyntax-only", "-DWITH_CUDA",
           "-DTORCH_EXTENSION_NAME=freeseg_check", *includes, str(CSRC / "ms_deform_attn.cpp")]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
