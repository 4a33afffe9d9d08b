"""Builds the optional compiled extension ``peftplug._C``; metadata lives in pyproject.toml.

``PEFTPLUG_BUILD_EXT=0`` skips it (every op then runs its pure-PyTorch reference). CPU kernels
(``csrc/ops/<op>/cpu/*.cpp``) always build; CUDA kernels (``csrc/ops/<op>/cuda/*.cu``, *.cpp) are
added only when torch is a CUDA build and a CUDA toolkit is found, because ``CUDAExtension``
does not build against the CPU wheel.
"""

from __future__ import annotations

import os
from pathlib import Path

from setuptools import setup

ROOT = Path(__file__).parent
CSRC = ROOT / "csrc"


def _cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    line = next((line for line in text.splitlines() if line.startswith("flags")), "")
    return set(line.split(":", 1)[-1].split())


def _sources(pattern: str) -> list[str]:
    return sorted(str(path.relative_to(ROOT)) for path in CSRC.glob(pattern))


def _extension_build() -> dict:
    if os.environ.get("PEFTPLUG_BUILD_EXT", "1") == "0":
        return {}
    import torch
    from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension

    sources = ["csrc/extension.cpp", *_sources("ops/*/cpu/*.cpp")]
    cxx = ["-O3"]  # the C++ standard is the one torch.utils.cpp_extension picks for this torch
    if {"avx512f", "avx512bw"} <= _cpu_flags():
        cxx += ["-mavx512f", "-mavx512bw"]
    cuda_sources = _sources("ops/*/cuda/*.cu") + _sources("ops/*/cuda/*.cpp")
    if cuda_sources and torch.version.cuda and CUDA_HOME:
        extension = CUDAExtension(
            "peftplug._C", sources + cuda_sources,
            define_macros=[("PEFTPLUG_WITH_CUDA", None)],
            extra_compile_args={"cxx": cxx, "nvcc": ["-O3"]},
        )
    else:
        extension = CppExtension("peftplug._C", sources, extra_compile_args={"cxx": cxx})
    return {"ext_modules": [extension], "cmdclass": {"build_ext": BuildExtension}}


setup(**_extension_build())
