"""Builds the optional compiled extension ``peftplug._C``; metadata lives in pyproject.toml.

``PEFTPLUG_BUILD_EXT=0`` skips it (every op then runs its pure-PyTorch reference). CPU kernels
always build: ``csrc/*.cpp`` and ``csrc/ops/<op>/cpu/*.cpp`` once, and the inner loops in
``csrc/ops/<op>/cpu/isa/*.cpp`` once per instruction set of this architecture (DEFAULT, and on
x86-64 also AVX2 and AVX512), each with its own flags and ``CPU_CAPABILITY``, as PyTorch builds
its own CPU kernels; the extension picks one at run time from the CPU's features. Nothing here
reads the build machine's CPU, so a build runs on any CPU of its architecture. CUDA kernels
(``csrc/ops/<op>/cuda/*.cu``, *.cpp) are added only when torch is a CUDA build and a CUDA toolkit
is found, because ``CUDAExtension`` does not build against the CPU wheel.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

from setuptools import setup

ROOT = Path(__file__).parent
CSRC = ROOT / "csrc"

# PyTorch's flags for the same capabilities; csrc/cpu_capability.cpp checks the CPU for each.
AVX2_FLAGS = ["-mavx2", "-mfma", "-mf16c", "-mbmi2"]
X86_CAPABILITIES = {
    "AVX2": AVX2_FLAGS,
    "AVX512": [*AVX2_FLAGS, "-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq"],
}


def cpu_capabilities() -> dict[str, list[str]]:
    """Instruction sets to compile the isa/ kernels for, in increasing order, with their flags."""
    capabilities: dict[str, list[str]] = {"DEFAULT": []}
    if platform.machine().lower() in {"x86_64", "amd64"}:
        capabilities.update(X86_CAPABILITIES)
    return capabilities


def _sources(pattern: str) -> list[str]:
    return sorted(str(path.relative_to(ROOT)) for path in CSRC.glob(pattern))


def _extension_build() -> dict:
    if os.environ.get("PEFTPLUG_BUILD_EXT", "1") == "0":
        return {}
    import torch
    from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension

    class BuildPerCpuCapability(BuildExtension):
        """Compiles the isa/ sources once per instruction set and links them after the rest.

        Linking them last, in increasing order, means an inline function that several objects
        emit is taken from the least demanding one, so no AVX code leaks into a portable path.
        """

        def build_extension(self, ext) -> None:  # noqa: ANN001 (setuptools' Extension)
            cxx = ext.extra_compile_args
            cxx = list(cxx["cxx"] if isinstance(cxx, dict) else cxx)
            for name, flags in cpu_capabilities().items():
                ext.extra_objects = [*ext.extra_objects, *self.compiler.compile(
                    _sources("ops/*/cpu/isa/*.cpp"),
                    output_dir=os.path.join(self.build_temp, "isa", name.lower()),
                    macros=[("CPU_CAPABILITY", name), (f"CPU_CAPABILITY_{name}", None), *ext.define_macros],
                    include_dirs=ext.include_dirs,
                    extra_postargs=cxx + flags,
                    depends=ext.depends,
                )]
            super().build_extension(ext)

    sources = _sources("*.cpp") + _sources("ops/*/cpu/*.cpp")
    cxx = ["-O3"]  # the C++ standard is the one torch.utils.cpp_extension picks for this torch
    built = [(f"PEFTPLUG_BUILT_{name}", None) for name in cpu_capabilities()]
    cuda_sources = _sources("ops/*/cuda/*.cu") + _sources("ops/*/cuda/*.cpp")
    if cuda_sources and torch.version.cuda and CUDA_HOME:
        extension = CUDAExtension(
            "peftplug._C", sources + cuda_sources,
            define_macros=[*built, ("PEFTPLUG_WITH_CUDA", None)],
            extra_compile_args={"cxx": cxx, "nvcc": ["-O3"]},
        )
    else:
        extension = CppExtension("peftplug._C", sources, define_macros=built, extra_compile_args={"cxx": cxx})
    return {"ext_modules": [extension], "cmdclass": {"build_ext": BuildPerCpuCapability}}


setup(**_extension_build())
