#!/usr/bin/env bash
# The prepared GPU check: the speed suites on a CUDA machine (the device tool's H200), in one command.
#
#   scripts/gpu.sh prepare          here, with PyPI: fills .gpu/ (git-ignored) with upstream ComfyUI 0.33.0's code, the
#                                   Python 3.12 wheels the GPU image lacks (pins read from requirements-dev.txt and
#                                   requirements-host-0.33.txt) and the commit measured; checks the 64 MiB carry
#   scripts/gpu.sh run              there: installs the wheels, unpacks the host, runs SUITES with CA_TOME_DEVICE=cuda
#                                   in a scratch copy of the checkout (the committed CPU results stay untouched) and
#                                   copies every result file written, nvidia-smi's report and the log to $OUT
#                                   (default: artifacts/gpu)
#   scripts/gpu.sh run --rehearse   here: the same on the CPU with the quick suites, to check the script before a GPU
#                                   is lent. GPU_PYTHON picks the interpreter: a venv holding only the GPU image's
#                                   packages tests the wheel list (on 0.33 here, PYTHONPATH=devkit/stubs adds torchaudio)
#
# The device call (minutes on an H200: an estimate, never measured; most of it is loading ComfyUI four times and
# generating the full-shape SD1.5 checkpoint):
#   run(command="scripts/gpu.sh run", carry=[".gpu"], timeout_s=420)
# Commit what comes back under benchmarks/results/gpu/; each file's run metadata names the device and dtype.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STAGE="$ROOT/.gpu"
# What the suites import on ComfyUI 0.33 (listed from sys.modules after importing them here) that the GPU
# image lacks (its package list has torch, numpy, safetensors, transformers, einops, scipy,
# pillow, psutil, tqdm, pyyaml, opencv...).
# Pure-Python wheels where the project has one: comfy-kitchen's CUDA build alone (58 MB) would not fit the carry,
# and with pytorch attention ComfyUI calls none of its kernels.
PURE_WHEELS=(torchsde trampoline comfy-kitchen truststore)
BINARY_WHEELS=(av comfy-aimdo)
# The suites the check runs (benchmark module and its arguments); each writes its result file(s) into the
# scratch copy's benchmarks/results, and every file written there comes back.
SUITES=(
  "speed --size 1024 --repeats 3 --step-run-steps 2 --run-steps 20"
  "dit --repeats 3"
  "dit --family sd3 --repeats 3"
  "wan --family wan21 --repeats 3"
)
QUICK_SUITES=("speed --quick" "dit --quick" "dit --family sd3 --quick" "wan --family wan21 --quick")

say() { printf '[gpu] %s\n' "$*"; }
die() { printf '[gpu] ERROR: %s\n' "$*" >&2; exit 2; }

pin() {  # the pinned requirement for a package name, from the project's requirement files
  local name="$1" line
  line="$(grep -ihE "^${name//[-_]/[-_]}==" "$ROOT/requirements-host-0.33.txt" "$ROOT/requirements-dev.txt" | head -1)"
  [[ -n "$line" ]] || die "no pin for $name in requirements-host-0.33.txt or requirements-dev.txt"
  printf '%s' "$line"
}

download() {  # download IMPLEMENTATION PLATFORM-OPTIONS... -- NAMES...: Python 3.12 wheels of the pinned versions
  local implementation="$1" platforms=() requirements=() name
  shift
  while [[ "$1" != "--" ]]; do platforms+=("$1"); shift; done
  shift
  for name in "$@"; do requirements+=("$(pin "$name")"); done
  say "wheels for Python 3.12 ($implementation): ${requirements[*]}"
  "$ROOT/.venv/bin/python" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
      --implementation "$implementation" "${platforms[@]}" -d "$STAGE/wheels" "${requirements[@]}" \
      2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
}

prepare() {
  CA_TOME_HOST=0.33 "$ROOT/scripts/dev.sh" setup >/dev/null
  rm -rf "$STAGE" && mkdir -p "$STAGE/wheels"
  say "host: ComfyUI 0.33.0's code into .gpu/comfyui.tar.gz (no checkpoints, custom nodes, tests, blueprints, or the"
  say "      tokenizers of text encoders the suites never build: the carry is 64 MiB)"
  local tree=ComfyUI-0.33.0
  tar -czf "$STAGE/comfyui.tar.gz" -C "$ROOT/.host" --exclude='*.safetensors' --exclude="$tree/custom_nodes/*" \
      --exclude="$tree/output" --exclude="$tree/user" --exclude="$tree/tests" --exclude="$tree/tests-unit" \
      --exclude="$tree/blueprints" --exclude="$tree/comfy/text_encoders/*_tokenizer" --exclude='__pycache__' "$tree"
  download py --platform any -- "${PURE_WHEELS[@]}"
  download cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
      -- "${BINARY_WHEELS[@]}"
  [[ -z "$(git -C "$ROOT" status --porcelain --untracked-files=no)" ]] \
    || die "the checkout has uncommitted changes: commit them first, so that the results name the code that ran"
  git -C "$ROOT" rev-parse --short HEAD > "$STAGE/commit"
  local staged tracked
  staged="$(du -sb "$STAGE" | cut -f1)"
  tracked="$(git -C "$ROOT" ls-files -z | (cd "$ROOT" && xargs -0 du -cb) | tail -1 | cut -f1)"
  (( staged + tracked <= 64 * 1024 * 1024 )) \
    || die "the checkout ($((tracked >> 20)) MiB) and .gpu/ ($((staged >> 20)) MiB) exceed the device's 64 MiB carry"
  say "ready: .gpu/ $((staged >> 20)) MiB + checkout $((tracked >> 20)) MiB travel (64 MiB at most); commit $(cat "$STAGE/commit")"
}

run() {  # run [--rehearse]: --rehearse runs the quick suites on this CPU, to check the script before a GPU is lent
  local out="${OUT:-$ROOT/artifacts/gpu}" scratch=/tmp/ca_tome_gpu python="${GPU_PYTHON:-python3}" suite
  local suites=("${SUITES[@]}") device=cuda
  if [[ "${1:-}" == --rehearse ]]; then suites=("${QUICK_SUITES[@]}") device=cpu; fi
  [[ -f "$STAGE/commit" ]] || die ".gpu/ is not prepared: run 'scripts/gpu.sh prepare' here and carry .gpu"
  if [[ $device == cuda ]]; then
    "$python" -c 'import torch, sys; sys.exit(not torch.cuda.is_available())' \
      || die "no CUDA device for $python's torch: 'run' is for the GPU machine ('run --rehearse' checks it here)"
  fi
  mkdir -p "$out"
  rm -rf "$scratch" && mkdir -p "$scratch/host" "$scratch/repo" "$scratch/site"
  "$python" -m pip install --quiet --no-index --no-deps --no-compile --no-cache-dir --target "$scratch/site" \
      "$STAGE"/wheels/*.whl
  tar -xzf "$STAGE/comfyui.tar.gz" -C "$scratch/host"
  tar -cf - -C "$ROOT" --exclude=./.gpu --exclude=./.venv --exclude=./.host --exclude=./artifacts . \
    | tar -xf - -C "$scratch/repo"
  touch "$scratch/started"
  # The device's copy of the checkout has no .git for the suites to ask; prepare refused a dirty tree and
  # wrote the commit measured to commit.txt, so the suites are allowed to write (their files say "dirty": null).
  export PYTHONPATH="$scratch/site${PYTHONPATH:+:$PYTHONPATH}" COMFYUI_PATH="$scratch/host/ComfyUI-0.33.0" \
         CA_TOME_DEVICE=$device PYTHONUNBUFFERED=1 CA_TOME_ALLOW_DIRTY=1
  { nvidia-smi || echo "no nvidia-smi"; } > "$out/nvidia-smi.txt" 2>&1
  cp "$STAGE/commit" "$out/commit.txt"
  for suite in "${suites[@]}"; do
    say "python -m benchmarks.$suite" | tee -a "$out/log.txt"
    # shellcheck disable=SC2086  # the suite's arguments split on purpose
    (cd "$scratch/repo" && "$python" -m benchmarks.$suite) >> "$out/log.txt" 2>&1 \
      || say "failed: benchmarks.$suite (see log.txt)" | tee -a "$out/log.txt"
  done
  find "$scratch/repo/benchmarks/results" -name '*.json' -newer "$scratch/started" -exec cp {} "$out/" \;
  say "results in $out: $(ls "$out" | tr '\n' ' ')"
}

case "${1:-}" in
  prepare) prepare ;;
  run) run "${2:-}" ;;
  *) die "usage: scripts/gpu.sh prepare | run [--rehearse]" ;;
esac
