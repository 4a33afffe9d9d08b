#!/usr/bin/env bash
# The GPU run (issue 15): build the extension, test the CUDA ops, measure G1-G5, in one call.
#
#   bash benchmarks/gpu/run.sh [--dry-run] [--only nf4|prefix|trainer[,...]] [--no-build]
#                              [--budget-s 480] [OUT_DIR]
#
# Results go to OUT_DIR (else $OUT, else build/gpu-run), one log per stage and a JSON of its
# figures, each written as the stage goes, so a time limit still leaves what finished:
#   env.log  build.log  tests.log  tests.json  kernels.log  kernels.json  trainer.log  trainer.json
# Stages: 1 environment; 2 build (TORCH_CUDA_ARCH_LIST=9.0a, MAX_JOBS=all cores; --no-build uses
# the installed build); 3 pytest tests/test_cuda_ops.py -x (a skipped test fails the stage);
# 4 benchmarks/gpu/kernel_benchmarks.py, G1-G4, inside a time budget; 5 benchmarks/gpu/trainer_step.py,
# G5 on an 8-layer Llama-8B-shaped model, if time remains. --only repeats what failed: nf4 is
# the NF4 tests and G1-G3, prefix the prefix-attention tests and G4, trainer G5.
# --dry-run is the CPU rehearsal: the same entry points on the CPU, tiny shapes, no timing
# worth reading. Wheels in .whl/ (bitsandbytes for the anchors) are installed first, into a
# folder put on PYTHONPATH. Exit status 0 only when every stage that ran passed.
set -uo pipefail

DRY_RUN=0 BUILD=1 ONLY="nf4,prefix,trainer" BUDGET_S=480 OUT_DIR="${OUT:-}"
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY_RUN=1 ;;
    --no-build) BUILD=0 ;;
    --only) ONLY="${2:?--only needs nf4, prefix or trainer}"; shift ;;
    --budget-s) BUDGET_S="${2:?--budget-s needs seconds}"; shift ;;
    -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
    -*) echo "run.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    *) OUT_DIR="$1" ;;
  esac
  shift
done
for part in ${ONLY//,/ }; do
  case "$part" in nf4|prefix|trainer) ;; *)
    echo "run.sh: --only takes nf4, prefix or trainer (comma-separated), not '$part'" >&2; exit 2 ;;
  esac
done
selected() { [[ ",$ONLY," == *",$1,"* ]]; }

if [ -n "$OUT_DIR" ]; then mkdir -p "$OUT_DIR" && OUT_DIR="$(cd "$OUT_DIR" && pwd)"; fi
cd "$(dirname "$0")/../.."
OUT_DIR="${OUT_DIR:-$PWD/build/gpu-run}" && mkdir -p "$OUT_DIR"
PYTHON="${PYTHON:-python3}"
SCRATCH="$(mktemp -d)" && trap 'rm -rf "$SCRATCH"' EXIT
STARTED=$SECONDS
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
if [ "$DRY_RUN" = 1 ]; then
  DEVICE=cpu; TINY=(--device cpu --tiny); export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
else
  DEVICE=cuda; TINY=()
fi
left() { echo $((BUDGET_S - (SECONDS - STARTED))); }

STATUS=0
SUMMARY=()
# stage NAME LOG COMMAND...: runs COMMAND with its output in LOG, shows it (of the build, only
# its errors and last lines: the whole of it is in build.log), notes the result
stage() {
  local name="$1" log="$2" began=$SECONDS code
  shift 2
  echo "== $name ($(left) s of the budget left)"
  "$@" > "$log" 2>&1
  code=$?
  if [ "$name" = build ]; then
    grep -m 30 -E "error|Error" "$log"; tail -n 3 "$log"
  else
    cat "$log"
  fi
  SUMMARY+=("$(printf '%-8s %-6s %4d s' "$name" "$([ $code = 0 ] && echo ok || echo FAILED)" \
    $((SECONDS - began)))")
  [ $code = 0 ] || STATUS=1
  return $code
}

environment() {
  install_wheels || return 1
  date -u +"date: %Y-%m-%dT%H:%M:%SZ"
  echo "mode: $([ $DRY_RUN = 1 ] && echo 'dry run (CPU)' || echo GPU); only: $ONLY; budget: ${BUDGET_S} s"
  git log -1 --format='commit: %H %s' 2>/dev/null || echo "commit: (no git here)"
  nvidia-smi 2>&1 || echo "nvidia-smi: not available"
  command -v nvcc >/dev/null && nvcc --version | tail -2 || echo "nvcc: not on PATH"
  lscpu 2>/dev/null | grep -m1 'Model name' || true
  "$PYTHON" - <<'EOF'
import importlib.metadata as metadata
import platform

import torch

print(f"python {platform.python_version()}; torch {torch.__version__} (CUDA {torch.version.cuda}); "
      f"GPU visible: {torch.cuda.is_available()}")
if torch.cuda.is_available():
    properties = torch.cuda.get_device_properties(0)
    print(f"device: {properties.name}, {properties.multi_processor_count} SMs, "
          f"{properties.total_memory / 2**30:.0f} GiB")
for name in ("transformers", "peft", "accelerate", "bitsandbytes", "safetensors", "pluggy"):
    try:
        print(f"{name} {metadata.version(name)}")
    except metadata.PackageNotFoundError:
        print(f"{name}: not installed")
EOF
}

# Wheels the machine lacks (.whl/, carried): installed apart, put first on PYTHONPATH.
install_wheels() {
  [ -n "$(ls .whl/*.whl 2>/dev/null)" ] || { echo "wheels: none in .whl/"; return 0; }
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$SCRATCH/site" .whl/*.whl || return 1
  export PYTHONPATH="$SCRATCH/site${PYTHONPATH:+:$PYTHONPATH}"
  echo "wheels: installed $(cd .whl && ls *.whl)"
}

build() {
  local plugins=()
  for plugin in plugins/peftplug-*; do plugins+=(-e "$plugin"); done
  export TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0a}" MAX_JOBS="${MAX_JOBS:-$(nproc)}"
  echo "TORCH_CUDA_ARCH_LIST=$TORCH_CUDA_ARCH_LIST MAX_JOBS=$MAX_JOBS"
  rm -f peftplug/_C*.so
  "$PYTHON" -m pip install --no-index --no-build-isolation --no-deps -e . "${plugins[@]}"
}

# On the GPU the extension must have loaded with its CUDA kernels (else every test would skip);
# on the CPU, without it, the ops run their pure-PyTorch references (PEFTPLUG_BUILD_EXT=0).
extension_check() {
  "$PYTHON" - "$DEVICE" <<'EOF'
import sys

from peftplug.ops import extension_status

status = extension_status()
print(status)
if sys.argv[1] == "cuda" and not (status["loaded"] and status.get("cuda")):
    sys.exit(f"the extension {'has no CUDA kernels' if status['loaded'] else 'did not load'}: "
             "see build.log")
EOF
}

cuda_tests() {
  local expression=""
  selected nf4 && expression="nf4 or dequantize"
  selected prefix && expression="${expression:+$expression or }prefix"
  local limit=(timeout 150) use_extension=1  # on the GPU a hung kernel must not eat the lease
  if [ "$DRY_RUN" = 1 ]; then
    # The rehearsal runs this file against the ops' references: it checks the file, not the CPU
    # kernels (tested under their own bounds elsewhere). ATen's CPU flash backward, which the CPU
    # prefix kernel uses for the keys, does not meet the flash-attention rule in bf16 with GQA
    # (dK, dV up to 2.6x the plain bf16 error; benchmarks/RESULTS.md). It leaves out the 300-row
    # NF4 cases: a minute of CPU bf16 matmuls, and no path the 16-row cases do not take here.
    limit=() use_extension=0 expression="($expression) and not 300"
  fi
  PEFTPLUG_TEST_DEVICE=$DEVICE PEFTPLUG_USE_EXT=$use_extension "${limit[@]}" \
    "$PYTHON" -m pytest tests/test_cuda_ops.py -x -q -rs \
    -p no:cacheprovider -k "$expression" --junitxml="$SCRATCH/tests.xml"
  local code=$?
  "$PYTHON" benchmarks/gpu/junit_summary.py "$SCRATCH/tests.xml" "$OUT_DIR/tests.json" || code=1
  return $code
}

kernels() {
  local sections=()
  selected nf4 && sections+=(G1 G2 G3)
  selected prefix && sections+=(G4)
  local budget=$(( $(left) < 180 ? $(left) : 180 ))
  [ "$budget" -ge 10 ] || budget=10
  local repeats=30
  [ "$DRY_RUN" = 1 ] && repeats=2
  timeout $((budget + 60)) "$PYTHON" benchmarks/gpu/kernel_benchmarks.py --only "$(IFS=,; echo "${sections[*]}")" \
    --repeats $repeats --budget-s "$budget" --json "$OUT_DIR/kernels.json" "${TINY[@]}"
}

trainer() {
  local shape=(--layers 8 --steps 20 --length 2048)
  [ "$DRY_RUN" = 1 ] && shape=(--layers 2 --steps 3 --length 32)
  timeout $(( $(left) + 30 )) "$PYTHON" benchmarks/gpu/trainer_step.py "${shape[@]}" \
    --budget-s "$(left)" --json "$OUT_DIR/trainer.json" "${TINY[@]}"
}

stage env "$OUT_DIR/env.log" environment
if [ "$BUILD" = 1 ]; then stage build "$OUT_DIR/build.log" build; else : > "$OUT_DIR/build.log"; fi
extension_check 2>&1 | tee -a "$OUT_DIR/build.log" \
  || { STATUS=1; SUMMARY+=("extension check FAILED (build.log)"); }
if selected nf4 || selected prefix; then
  stage tests "$OUT_DIR/tests.log" cuda_tests
  stage kernels "$OUT_DIR/kernels.log" kernels
fi
if selected trainer; then
  if [ "$(left)" -ge 90 ] || [ "$DRY_RUN" = 1 ]; then
    stage trainer "$OUT_DIR/trainer.log" trainer
  else
    SUMMARY+=("trainer  skipped: $(left) s left of the budget (re-run with --only trainer)")
  fi
fi

echo "== summary ($((SECONDS - STARTED)) s; results in $OUT_DIR)"
printf '%s\n' "${SUMMARY[@]}"
exit $STATUS
