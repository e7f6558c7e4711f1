"""Building and loading the compiled deformable-attention kernels (``freeseg/layers/csrc``).

The extension is compiled on first use with ``torch.utils.cpp_extension.load`` (ninja) into a
cache folder, ``$FREESEG_EXT_DIR`` or ``~/.cache/freeseg/ext/<torch version>``, so it is built
once per machine and torch version. The CUDA kernels are compiled in only when torch sees a GPU
and nvcc is found; otherwise the build is CPU-only (and much faster). If the build fails for any
reason the caller gets ``None`` and one warning, and the PyTorch path is used instead.
``FREESEG_DISABLE_EXT=1`` skips the build altogether (no warning).
"""
from __future__ import annotations

import contextlib
import logging
import os
import platform
import sys
import warnings
from pathlib import Path
from types import ModuleType
from typing import Iterator

import torch

CSRC = Path(__file__).resolve().parents[1] / "csrc"
CPU_SOURCES = ("ms_deform_attn.cpp", "ms_deform_attn_cpu.cpp")
CUDA_SOURCES = ("ms_deform_attn_cuda.cu",)

_cache: dict[bool, ModuleType | None] = {}
_warned = False


def ext_dir() -> Path:
    """Folder holding the compiled extension builds (one sub-folder per variant)."""
    env = os.environ.get("FREESEG_EXT_DIR")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "freeseg" / "ext" / torch.__version__.replace("+", "_")


def _cpp_extension() -> ModuleType:
    # Importing cpp_extension on a machine with nvcc but no GPU logs "No CUDA runtime is found";
    # irrelevant for a CPU build, so keep it out of the user's log.
    logger = logging.getLogger("torch.utils.cpp_extension")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        from torch.utils import cpp_extension
    finally:
        logger.setLevel(level)
    return cpp_extension


def cuda_buildable() -> bool:
    """Whether a CUDA build makes sense: torch was built with CUDA, sees a GPU, and nvcc exists."""
    cpp_extension = _cpp_extension()
    return torch.version.cuda is not None and torch.cuda.is_available() and cpp_extension.CUDA_HOME is not None


def cpu_flags() -> tuple[str, list[str]]:
    """(tag, compiler flags) for the vector instructions torch itself uses on this CPU.

    The channel loops vectorise; built for the baseline x86-64 (SSE2) they run about 2x (AVX2)
    to 3.5x (AVX-512) slower. The tag goes into the build folder's name, so machines that share
    a home folder but differ in CPU get their own builds.
    """
    if os.name == "nt" or platform.machine().lower() not in ("x86_64", "amd64"):
        return "native", []
    capability = torch.backends.cpu.get_cpu_capability()
    if capability.startswith("AVX512"):
        return "avx512", ["-mavx512f", "-mavx512vl", "-mavx512bw", "-mavx512dq", "-mavx2", "-mfma"]
    if capability == "AVX2":
        return "avx2", ["-mavx2", "-mfma"]
    return "sse2", []


def openmp_flags() -> list[str]:
    """Compiler and linker flags that let the kernels' ``at::parallel_for`` use several threads.

    ``at::parallel_for`` is a header template: in an extension compiled without OpenMP it runs
    every task on the calling thread, whatever ``torch.get_num_threads()`` says (measured: the
    640x960 encoder-layer forward took 34 ms on 1 or 2 threads; 11 ms on 2 with OpenMP). The
    extension links the OpenMP runtime torch itself uses (``libgomp.so.1``, already loaded by
    then, so there is one runtime and one thread pool). Apple's clang has no ``-fopenmp`` and
    Windows' compiler spells it otherwise: there the kernels stay single-threaded.
    """
    if sys.platform.startswith("linux") and torch.backends.openmp.is_available():
        return ["-fopenmp"]
    return []


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    # torch's own build lock (FileBaton) busy-waits and leaves a stale lock behind if a process
    # dies mid-build; an flock is released by the kernel when the holder exits.
    try:
        import fcntl
    except ImportError:  # Windows: rely on torch's FileBaton alone
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


NO_OPENMP_MARKER = "no-openmp"  # in a build folder: the OpenMP build failed there once


def build(with_cuda: bool, verbose: bool = False) -> ModuleType:
    """Compile (or load from the cache) the extension; raises whatever the build raises.

    With OpenMP when :func:`openmp_flags` asks for it. Should that build fail (a compiler
    without OpenMP support, e.g. clang without libomp), the kernels are built without it, one
    warning says they will run on one thread, and a ``no-openmp`` file in the build folder
    keeps later processes from trying again (delete it after installing OpenMP support).
    """
    cpp_extension = _cpp_extension()

    tag, isa_flags = cpu_flags()
    name = f"freeseg_ms_deform_attn_{'cuda' if with_cuda else 'cpu'}_{tag}"
    build_dir = ext_dir() / name
    build_dir.mkdir(parents=True, exist_ok=True)
    sources = [str(CSRC / s) for s in CPU_SOURCES + (CUDA_SOURCES if with_cuda else ())]
    defines = ["-DWITH_CUDA"] if with_cuda else []
    marker = build_dir / NO_OPENMP_MARKER

    def load(openmp: list[str]) -> ModuleType:
        return cpp_extension.load(
            name=name,
            sources=sources,
            build_directory=str(build_dir),
            extra_cflags=["-O3", *isa_flags, *openmp, *defines],
            extra_cuda_cflags=["-O3", *defines],
            extra_ldflags=openmp,
            with_cuda=with_cuda,
            verbose=verbose,
        )

    with _file_lock(build_dir / "freeseg.lock"):
        openmp = [] if marker.exists() else openmp_flags()
        if not openmp:
            return load([])
        try:
            return load(openmp)
        except Exception as exc:  # noqa: BLE001 - retried without OpenMP (whose error, if any, is raised)
            module = load([])  # raises if the compiler does not work at all
            first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            marker.write_text(f"the build with {' '.join(openmp)} failed: {first_line}\n")
            warnings.warn(
                f"freeseg: the deformable-attention kernels were built without OpenMP ({first_line}), "
                f"so they run on one thread. Install your compiler's OpenMP support, then delete {marker}.",
                RuntimeWarning,
                stacklevel=4,
            )
            return module


def load_extension(with_cuda: bool | None = None) -> ModuleType | None:
    """The compiled extension, or None (with one warning per process) when it cannot be built.

    Args:
        with_cuda: build the CUDA kernels too; None = when :func:`cuda_buildable`.
    """
    global _warned
    if with_cuda is None:
        with_cuda = cuda_buildable()
    if with_cuda in _cache:
        return _cache[with_cuda]
    if os.environ.get("FREESEG_DISABLE_EXT", "") not in ("", "0"):
        _cache[with_cuda] = None
        return None
    try:
        module = build(with_cuda)
    except Exception as exc:  # noqa: BLE001 - any build failure means "use the PyTorch path"
        module = None
        if not _warned:
            _warned = True
            first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            warnings.warn(
                "freeseg: could not build the compiled deformable-attention kernels "
                f"({type(exc).__name__}: {first_line}); using the slower PyTorch path. "
                "Install a C++ compiler and ninja, then run "
                "`python -m freeseg.layers.ms_deform_attn.build` to see the full error.",
                RuntimeWarning,
                stacklevel=3,
            )
    _cache[with_cuda] = module
    return module


def reset_cache() -> None:
    """Forget loaded/failed builds and the warning (tests use it to simulate a fresh process)."""
    global _warned
    _cache.clear()
    _warned = False
