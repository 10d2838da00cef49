"""The ComfyUI test host: where it is, importing it as a library, running its server.

Used by the tests, the demo and the benchmark. The host is the tree at ``COMFYUI_PATH`` (set by
``scripts/dev.sh``: the user's ComfyUI, the vendored 0.3.75 copy under ``.host/ComfyUI`` or, with
``CA_TOME_HOST=0.33``, upstream 0.33.0 under ``.host/ComfyUI-0.33.0``).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
VENDORED_HOST = REPO_ROOT / ".host" / "ComfyUI"
ARTIFACTS = REPO_ROOT / "artifacts"  # git-ignored: test outputs, screenshots, demo images
PACK_LINK_NAME = "ComfyUI-CA-ToMe"
DEVICES = ("cpu", "cuda")  # CA_TOME_DEVICE: where import_comfy puts ComfyUI (the benchmarks' device)


class HostError(RuntimeError):
    """The environment is not usable as a ComfyUI host; the message says what to fix."""


def comfyui_path() -> Path:
    raw = os.environ.get("COMFYUI_PATH")
    path = Path(raw) if raw else VENDORED_HOST
    if not all((path / name).exists() for name in ("main.py", "nodes.py", "folder_paths.py", "comfy")):
        hint = "COMFYUI_PATH" if raw else "the vendored host"
        raise HostError(f"{path} ({hint}) is not a ComfyUI tree; run `scripts/dev.sh setup` first")
    return path.resolve()


def host_version(path: Path | None = None) -> str:
    """The host's ComfyUI version, read (not imported) from its ``comfyui_version.py``, else from the
    ``[project]`` version in its ``pyproject.toml``; ``"unknown"`` when neither says."""
    path = Path(path) if path else comfyui_path()
    with contextlib.suppress(OSError):
        found = re.search(r"""^__version__\s*=\s*["']([^"']+)["']""", (path / "comfyui_version.py").read_text(),
                          re.MULTILINE)
        if found:
            return found.group(1)
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        version = tomllib.loads((path / "pyproject.toml").read_text())["project"]["version"]
        if isinstance(version, str) and version:
            return version
    return "unknown"


def run_metadata(model=None) -> dict:
    """Where and when a result was measured: commit (``+dirty`` with uncommitted changes), machine,
    CPU model, torch and host versions, the device ComfyUI ran on (and ``model``'s dtype, a
    ModelPatcher's, when given), a UTC timestamp. Every benchmark result file records it."""
    import datetime
    import platform

    import torch

    def git(*args) -> str:
        return subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True).stdout.strip()

    cpu = "unknown"
    with contextlib.suppress(OSError):
        found = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.MULTILINE)
        cpu = found.group(1) if found else cpu
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    model_management = sys.modules.get("comfy.model_management")
    return {
        "commit": git("rev-parse", "--short", "HEAD") + ("+dirty" if git("status", "--porcelain", "--untracked-files=no") else ""),
        "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} CPU threads, " + (gpu or "no GPU"),
        "cpu": cpu, "torch": torch.__version__, "comfyui": host_version(),
        "device": str(model_management.get_torch_device()) if model_management else "cpu",
        **({"dtype": str(model.model.get_dtype()).removeprefix("torch.")} if model is not None else {}),
    }


def requested_device() -> str:
    """``CA_TOME_DEVICE``: ``cpu`` (the default: tests and this machine) or ``cuda`` (a GPU machine)."""
    device = os.environ.get("CA_TOME_DEVICE", "cpu")
    if device not in DEVICES:
        raise HostError(f"CA_TOME_DEVICE={device!r} is not a device the benchmarks run on; use one of {DEVICES}")
    return device


def import_comfy(path: Path | None = None, cpu: bool | None = None) -> Path:
    """Make ComfyUI importable in this process, on the CPU unless ``cpu=False`` or, when ``cpu`` is
    not given, ``CA_TOME_DEVICE=cuda``. Idempotent: the first import of ComfyUI fixes its device."""
    path = path or comfyui_path()
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))
    from comfy.cli_args import args  # noqa: E402  (must precede comfy.model_management)

    args.cpu = requested_device() == "cpu" if cpu is None else cpu
    args.use_pytorch_cross_attention = True
    import comfy.model_management  # noqa: F401

    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_in_use(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _json_or_text(body: bytes) -> dict:
    try:
        parsed = json.loads(body)
    except ValueError:
        return {"text": body.decode(errors="replace")}
    return parsed if isinstance(parsed, dict) else {"value": parsed}


class Server:
    """A real ComfyUI server process on a loopback port, with its log kept in a file."""

    def __init__(self, host_path: Path, port: int, log_path: Path, output_directory: Path,
                 extra_args: tuple[str, ...] = ()):
        self.host_path, self.port, self.log_path = host_path, port, log_path
        self.output_directory = output_directory
        self.extra_args = ("--output-directory", str(output_directory), *extra_args)
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 120.0) -> "Server":
        if port_in_use(self.port):
            raise HostError(f"port {self.port} on 127.0.0.1 is already in use; choose another port")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("wb")
        command = [sys.executable, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(self.port),
                   "--use-pytorch-cross-attention", "--disable-auto-launch", *self.extra_args]
        self.process = subprocess.Popen(command, cwd=self.host_path, stdout=log, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise HostError(f"ComfyUI exited with code {self.process.returncode} during start-up:\n{self.log()}")
            with contextlib.suppress(OSError):
                self.get("/system_stats")
                return self
            time.sleep(0.5)
        self.stop()
        raise HostError(f"ComfyUI did not answer on {self.url} within {timeout:.0f}s:\n{self.log()}")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def get(self, route: str):
        with urllib.request.urlopen(self.url + route, timeout=30) as response:
            return json.loads(response.read())

    def post(self, route: str, payload: dict):
        request = urllib.request.Request(self.url + route, data=json.dumps(payload).encode(),
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return _json_or_text(response.read())
        except urllib.error.HTTPError as error:
            return {"http_status": error.code, **_json_or_text(error.read())}

    def run_prompt(self, prompt: dict, timeout: float = 600.0) -> dict:
        """Queue an API-format workflow and wait for its history entry (success or error)."""
        queued = self.post("/prompt", {"prompt": prompt})
        if "prompt_id" not in queued:
            return {"rejected": queued}
        return self.wait_for(queued["prompt_id"], timeout)

    def wait_for(self, prompt_id: str, timeout: float = 600.0) -> dict:
        """The history entry of a queued prompt once it has finished (success or error)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            history = self.get(f"/history/{prompt_id}")
            if prompt_id in history and history[prompt_id].get("status", {}).get("completed") is not None:
                entry = history[prompt_id]
                if entry["status"].get("status_str") in ("success", "error"):
                    return entry
            if self.process.poll() is not None:
                raise HostError(f"ComfyUI died while running prompt {prompt_id}:\n{self.log()}")
            time.sleep(0.25)
        raise TimeoutError(f"prompt {prompt_id} did not finish within {timeout:.0f}s")

    def saved_images(self, entry: dict) -> dict:
        """The images a finished prompt saved, by file name, as uint8 RGB arrays."""
        import numpy as np
        from PIL import Image

        if entry.get("status", {}).get("status_str") != "success":
            raise AssertionError(f"prompt did not succeed: {json.dumps(entry.get('status', entry))[:4000]}")
        root = Path(self.output_directory)
        return {image["filename"]: np.asarray(Image.open(root / image["subfolder"] / image["filename"]).convert("RGB"))
                for output in entry["outputs"].values() for image in output.get("images", [])}

    def __enter__(self) -> "Server":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
