"""The GPU run's rehearsal: ``benchmarks/gpu/run.sh --dry-run`` on the CPU (issue 15).

GPU time comes in short leases, so the script that builds, tests and measures on the GPU must
work the first time. The rehearsal runs its every stage here (tiny shapes, the CPU kernels, the
extension already built by ``make test``): argument parsing, the imports, the anchors
(bitsandbytes and HF PEFT on the CPU), and the result files. Nothing here is skipped.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULT_FILES = ["build.log", "env.log", "kernels.json", "kernels.log", "tests.json", "tests.log",
                "trainer.json", "trainer.log"]
TESTED_OPS = ["test_dequantize_equals_the_reference_bit_for_bit",
              "test_dequantize_equals_bitsandbytes", "test_nf4_lora_linear_forward_and_backward",
              "test_nf4_ops_pass_opcheck", "test_prefix_attention_forward_and_backward"]
# Each benchmark row's error chain (bf16 operands, a dequantized bf16 weight, a bf16 LoRA
# hidden state or softmax, a bf16 output) rounds to bf16 at most 8 times: 8 u, u = 2^-8.
# Comparing against the wrong tensor gives errors near 1.
BF16_CHAIN_BOUND = 8 * 2.0**-8


def run_rehearsal(out: Path, *options: str) -> subprocess.CompletedProcess:
    environment = dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS="1")
    environment.pop("OUT", None)
    return subprocess.run(
        ["bash", "benchmarks/gpu/run.sh", "--dry-run", "--no-build", *options, str(out)],
        cwd=ROOT, env=environment, capture_output=True, text=True, timeout=1200,
    )


def errors(rows: list[dict]) -> list[float]:
    found = []
    for row in rows:
        error = row["relative_error"]
        found += list(error.values()) if isinstance(error, dict) else [error]
    return found


def test_the_dry_run_passes_every_stage_and_writes_every_result(tmp_path: Path) -> None:
    result = run_rehearsal(tmp_path)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    assert sorted(path.name for path in tmp_path.iterdir()) == RESULT_FILES
    for stage in ("env", "tests", "kernels", "trainer"):
        assert f"{stage:<8} ok" in result.stdout

    tests = json.loads((tmp_path / "tests.json").read_text())
    assert tests["passed"] > 0 and tests["failure"] == tests["error"] == tests["skipped"] == 0
    assert {case["test"].split("[")[0] for case in tests["cases"]} == set(TESTED_OPS)

    kernels = json.loads((tmp_path / "kernels.json").read_text())
    assert kernels["device"] == "cpu" and kernels["bitsandbytes"]
    sections = kernels["sections"]
    assert sorted(sections) == ["G1", "G2", "G3", "G4"]
    for name, section in sections.items():
        assert section["rows"] and "stopped" not in section, name
        assert all(0 <= error < BF16_CHAIN_BOUND for error in errors(section["rows"])), name
    assert all(row["bitsandbytes_ms"] > 0 for row in sections["G1"]["rows"])
    assert all(row["peft_bitsandbytes_ms"] > 0 for row in sections["G3"]["rows"])

    trainer = json.loads((tmp_path / "trainer.json").read_text())["sections"]["G5"]
    assert [row["run"] for row in trainer["rows"]] == [
        "peft+bitsandbytes", "peftplug", "peftplug, kernels off"]
    for row in trainer["rows"]:
        assert "failed" not in row and len(row["losses"]) == 3, row
    assert trainer["ratios"]["tokens_per_second_vs_peft"] > 0


def test_only_repeats_the_chosen_stage(tmp_path: Path) -> None:
    result = run_rehearsal(tmp_path, "--only", "trainer")
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        "build.log", "env.log", "trainer.json", "trainer.log"]


def test_a_wrong_stage_name_is_refused_with_the_choices(tmp_path: Path) -> None:
    result = run_rehearsal(tmp_path, "--only", "G1")
    assert result.returncode == 2
    assert "--only takes nf4, prefix or trainer" in result.stderr
    assert not any(tmp_path.iterdir())
