"""The CUDA sources compile on a machine without a GPU, so a CUDA compile error fails CI.

Each ``.cu`` kernel file holds device code only (no torch headers) and is compiled by nvcc for
sm_80 and sm_90a. The ``.cpp`` files next to them register the kernels with torch; they are
compiled by the host compiler (through nvcc) against the CPU wheel's headers, which lack only the generated
``c10/cuda/impl/cuda_cmake_macros.h`` of a CUDA build (written here as a CUDA wheel has it).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from torch.utils.cpp_extension import include_paths

ROOT = Path(__file__).resolve().parents[1]
KERNELS = sorted((ROOT / "csrc").glob("ops/*/cuda/*.cu"))
REGISTRATIONS = sorted((ROOT / "csrc").glob("ops/*/cuda/*.cpp"))
ARCHITECTURES = ("sm_80", "sm_90a")


NVCC = shutil.which("nvcc")
needs_nvcc = pytest.mark.skipif(NVCC is None, reason="no CUDA toolkit (nvcc) on this machine")


def test_there_are_cuda_sources() -> None:
    assert KERNELS and REGISTRATIONS


@needs_nvcc
@pytest.mark.parametrize("source", KERNELS, ids=[p.name for p in KERNELS])
def test_kernels_compile_for_ampere_and_hopper(source: Path, tmp_path: Path) -> None:
    targets = [f"-gencode=arch=compute_{a[3:]},code={a}" for a in ARCHITECTURES]
    command = [NVCC, "-c", "-std=c++17", "-O3", *targets,
               str(source), "-o", str(tmp_path / "kernels.o")]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@needs_nvcc
@pytest.mark.parametrize("source", REGISTRATIONS, ids=[p.name for p in REGISTRATIONS])
def test_registrations_compile_against_torch_headers(source: Path, tmp_path: Path) -> None:
    generated = tmp_path / "c10" / "cuda" / "impl" / "cuda_cmake_macros.h"
    generated.parent.mkdir(parents=True)
    generated.write_text("#pragma once\n#define C10_CUDA_BUILD_SHARED_LIBS\n")
    includes = [tmp_path, *include_paths(), source.parent]
    # nvcc drives the host compiler and adds the CUDA toolkit's include directory
    command = [NVCC, "-c", "-x", "c++", "-std=c++17", "-w", "-DPEFTPLUG_WITH_CUDA",
               *[f"-I{path}" for path in includes], str(source), "-o", str(tmp_path / "host.o")]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
