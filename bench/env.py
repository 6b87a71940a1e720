"""The environment block stored with every record, and a short tag for result file names."""

from __future__ import annotations

import platform
import re

import torch


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def nvidia_driver() -> str | None:
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            v = pynvml.nvmlSystemGetDriverVersion()
            return v.decode() if isinstance(v, bytes) else v
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # no NVIDIA driver here: that is information, not an error
        return None


def environment(device: str | torch.device = "cpu") -> dict:
    device = torch.device(device)
    cuda = device.type == "cuda" and torch.cuda.is_available()
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "device": device.type,
        "device_name": torch.cuda.get_device_name(device) if cuda else cpu_model(),
        "driver": nvidia_driver() if cuda else None,
        "cpu": cpu_model(),
        "threads": torch.get_num_threads(),
        "platform": platform.platform(),
    }


def env_tag(env: dict) -> str:
    """A file-name-safe summary: e.g. 'cpu-2threads-torch2.13.0' or 'nvidia-h100-80gb-hbm3-torch2.14.1'."""
    if env["device"] == "cuda":
        dev = env["device_name"]
    else:
        dev = f"cpu-{env['threads']}threads"
    torch_v = env["torch"].split("+")[0]
    return re.sub(r"[^a-z0-9.]+", "-", f"{dev}-torch{torch_v}".lower()).strip("-")
