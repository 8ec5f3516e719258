"""Build and load the fused recurrences (csrc/fused_rnn.cpp) with torch.utils.cpp_extension.

The library is compiled on first use for this machine's CPU (-march=native, and the vector width
that torch itself dispatches to), so its build cache is keyed by everything the binary depends
on: the source, torch's version, the compiler and its flags, and the CPU. Where it cannot be
built (no compiler, no ninja), `load_fused_ops` returns None and the caller falls back.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("csrc") / "fused_rnn.cpp"
NAMESPACE = "seqlab_fused"
# What torch.backends.cpu.get_cpu_capability() names -> the flags of torch's own kernels of
# that width (ATen's Vectorized picks its implementation from CPU_CAPABILITY_*).
CAPABILITY_FLAGS = {
    "AVX512": ["-DCPU_CAPABILITY=AVX512", "-DCPU_CAPABILITY_AVX512"],
    "AVX2": ["-DCPU_CAPABILITY=AVX2", "-DCPU_CAPABILITY_AVX2"],
}
# -ffp-contract=off: no fused multiply-adds that torch's elementwise kernels do not make either.
BASE_FLAGS = ["-O3", "-march=native", "-ffp-contract=off", "-std=c++17"]


def compiler() -> str:
    return os.environ.get("CXX", "c++")


def openmp_flags() -> list[str]:
    """-fopenmp where torch's own threads are OpenMP's: at::parallel_for, inlined from ATen's
    headers there, runs the batch's row blocks on them (without the flag its pragma is ignored
    and one thread runs every block). torch's other backends call into libtorch instead."""
    backend = torch.__config__.parallel_info()
    return ["-fopenmp"] if "parallel backend: OpenMP" in backend else []


def compiler_flags() -> list[str]:
    capability = torch.backends.cpu.get_cpu_capability()
    vector = CAPABILITY_FLAGS.get(capability, ["-DCPU_CAPABILITY=DEFAULT"])
    return [*BASE_FLAGS, *openmp_flags(), *vector]


def _compiler_version() -> str:
    try:
        done = subprocess.run([compiler(), "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as error:
        raise RuntimeError(f"no C++ compiler ({compiler()}: {error})") from None
    return done.stdout


def _cpu() -> str:
    """The CPU model and feature flags: -march=native code must not run on another CPU."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor()
    lines = [line for line in info.splitlines() if line.startswith(("model name", "flags"))]
    return "\n".join(sorted(set(lines)))


def build_key() -> str:
    parts = [
        SOURCE.read_text(),
        torch.__version__,
        sys.version,
        _compiler_version(),
        *compiler_flags(),
        _cpu(),
    ]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]


def _extensions_root() -> Path:
    """TORCH_EXTENSIONS_DIR, where cpp_extension keeps its builds; else ~/.cache's, or the temp
    directory's where home cannot be written."""
    if root := os.environ.get("TORCH_EXTENSIONS_DIR"):
        return Path(root)
    home = Path.home() / ".cache" / "torch_extensions"
    with contextlib.suppress(OSError):
        home.mkdir(parents=True, exist_ok=True)
    if os.access(home, os.W_OK):
        return home
    return Path(tempfile.gettempdir()) / f"torch_extensions-{os.getuid()}"


def build_directory(key: str) -> Path:
    return _extensions_root() / f"{NAMESPACE}_{key}"


@functools.cache
def load_fused_ops() -> object | None:
    """torch.ops.seqlab_fused, built if needed; None where it cannot be built or loaded.
    SEQLAB_FAST_RNN_NATIVE=0 disables it."""
    if os.environ.get("SEQLAB_FAST_RNN_NATIVE", "1") == "0":
        return None
    try:
        from torch.utils import cpp_extension

        key = build_key()  # raises where there is no compiler
        directory = build_directory(key)
        directory.mkdir(parents=True, exist_ok=True)
        # cpp_extension locks the directory while it builds: parallel jobs build it once.
        cpp_extension.load(
            name=f"{NAMESPACE}_{key}",
            sources=[str(SOURCE)],
            extra_cflags=compiler_flags(),
            build_directory=str(directory),
            is_python_module=False,
            verbose=False,
        )
        return getattr(torch.ops, NAMESPACE)
    except Exception as error:
        # A compiler's log can run to pages: its last lines say what failed.
        reason = " | ".join(str(error).strip().splitlines()[-3:])
        log.warning("FastRNN: the fused C++ loops are unavailable (%s); using TorchScript", reason)
        return None
