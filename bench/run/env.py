"""The environment block stored with every record, and a short tag for result file names."""

from __future__ import annotations

import platform
import re

import torch

from titok.inference import cpu_bf16_flags, cpu_capability


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
        # Native bf16 on this CPU (avx512_bf16 / amx_bf16 flags; none: bf16 is emulated and slower than fp32).
        "cpu_bf16": cpu_bf16_flags(),
        "cpu_capability": cpu_capability(),
    }


def env_tag(env: dict) -> str:
    """A file-name-safe summary: e.g. 'cpu-amd-epyc-2threads-torch2.14.1' or 'nvidia-h100-80gb-hbm3-torch2.14.1'.

    CPU tags carry the processor's model name (trade marks, clocks and core counts dropped): numbers from two
    different CPUs must never share a results file.
    """
    if env["device"] == "cuda":
        dev = env["device_name"]
    else:
        cpu = re.sub(r"\(r\)|\(tm\)|\bcpu\b|@.*$|\d+-core processor|processor", "", str(env.get("cpu") or "").lower())
        dev = f"cpu-{cpu.strip()}-{env['threads']}threads" if cpu.strip() else f"cpu-{env['threads']}threads"
    torch_v = env["torch"].split("+")[0]
    return re.sub(r"[^a-z0-9.]+", "-", f"{dev}-torch{torch_v}".lower()).strip("-")


def run_environment(device: str | torch.device, world_size: int = 1) -> dict:
    """`environment(device)` plus the process group a run spans: `world_size` (1 outside torchrun) and `devices`,
    every rank's device name in rank order (gathered once, at the start of a run). COLLECTIVE under torchrun:
    every rank calls it."""
    from bench.metrics.distributed import all_gather

    env = environment(device)
    env["world_size"] = int(world_size)
    env["devices"] = all_gather(env["device_name"]) if world_size > 1 else [env["device_name"]]
    return env
