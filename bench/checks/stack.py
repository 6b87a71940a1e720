"""The software and hardware stack as `titok-bench doctor` reports it: what is installed, what is found, where.

Every probe answers with text, never raises: a missing driver or package is information for the reader. Packages
of the metrics stack are looked up by their installed metadata, not imported (torch-fidelity imports torchvision,
which takes seconds and may fail on its own).
"""

from __future__ import annotations

import os
import platform
from importlib import metadata

import torch

METRICS_PACKAGES = ("torch-fidelity", "clean-fid", "torchvision", "scipy")


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def cuda_lines() -> list[str]:
    built = torch.version.cuda
    if not torch.cuda.is_available():
        return [f"CUDA: not available (torch built {'with CUDA ' + built if built else 'for CPU only'})"]
    lines = [f"CUDA {built}, cuDNN {torch.backends.cudnn.version()}, {torch.cuda.device_count()} GPU(s)"]
    for i in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(i)
        lines.append(f"  GPU {i}: {p.name}, {p.total_memory / 2**30:.1f} GiB, compute capability {p.major}.{p.minor}")
    return lines


def cpu_line() -> str:
    """The CPU, the vector instructions torch dispatches to, and whether bf16 inference pays off here."""
    from bench.run.env import cpu_model
    from titok.inference import cpu_bf16_flags, cpu_capability

    flags = cpu_bf16_flags()
    bf16 = (f"native bf16 ({', '.join(flags)}): InferenceOptions(precision='bf16') can use it" if flags
            else "no native bf16 (no avx512_bf16/amx_bf16 flag): bf16 would be emulated, slower than fp32")
    return f"CPU: {cpu_model()}, torch kernels {cpu_capability()}, {bf16}"


def nvml_line() -> str:
    try:
        import pynvml
    except ImportError:
        return "NVML: nvidia-ml-py not installed (GPU memory is then read from torch's allocator only)"
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        return f"NVML: not available ({exc}): no NVIDIA driver here"
    try:
        driver = pynvml.nvmlSystemGetDriverVersion()
        count = pynvml.nvmlDeviceGetCount()
    finally:
        pynvml.nvmlShutdown()
    return f"NVML: driver {driver.decode() if isinstance(driver, bytes) else driver}, {count} device(s)"


def metrics_line() -> str:
    versions = {p: _version(p) for p in METRICS_PACKAGES}
    missing = [p for p, v in versions.items() if v is None]
    shown = ", ".join(f"{p} {v}" for p, v in versions.items() if v)
    if missing:
        return (f"metrics stack: missing {', '.join(missing)} (FID/IS need it: pip install -r requirements/metrics.txt "
                f"-e '.[metrics]', or tox -e metrics){'; found ' + shown if shown else ''}")
    return f"metrics stack: {shown}"


def inception_line() -> tuple[str, str | None]:
    """(report line, sha256 of the weights found or None). Looks where runs look; downloads nothing."""
    from bench.metrics.inception import ENV_VAR, INCEPTION_FILE, inspect_weights, resolve_inception_weights
    from titok.errors import InputError

    try:
        path = resolve_inception_weights(None)
    except InputError:
        return (f"Inception weights: not found ({INCEPTION_FILE} via --inception-weights, ${ENV_VAR} or the cache); "
                "--inception-weights released downloads it into the cache", None)
    try:
        info = inspect_weights(path)
    except InputError as exc:
        return f"Inception weights: {path} is not usable: {exc}", None
    kind = "a stand-in: its numbers are not FID" if info.standin else "torch-fidelity's FID Inception, sha256 checked"
    return f"Inception weights: {path} ({kind})", info.weights_sha256


def cache_lines() -> list[str]:
    from titok.fetch import OFFLINE_ENV, cache_dir, hf_cache_dir, is_offline

    def state(p):
        return "exists" if p.is_dir() else "not created yet"

    lines = [f"cache: {cache_dir()} ({state(cache_dir())}; $TITOK_CACHE, else $XDG_CACHE_HOME/titok-bench)",
             f"hub cache: {hf_cache_dir()} ({state(hf_cache_dir())}; $HF_HUB_CACHE, else $HF_HOME/hub)",
             f"offline: {'yes' if is_offline() else 'no'} ({OFFLINE_ENV}={os.environ.get(OFFLINE_ENV, '')!r})"]
    if os.environ.get("HF_ENDPOINT"):
        lines.append(f"hub endpoint: {os.environ['HF_ENDPOINT']} (HF_ENDPOINT)")
    return lines


def stack_report() -> tuple[list[str], str | None]:
    """(lines, sha256 of the Inception weights found) for the doctor's first section."""
    inception, sha = inception_line()
    hub = _version("huggingface_hub") or _version("huggingface-hub")
    lines = [f"python {platform.python_version()}, torch {torch.__version__}, {torch.get_num_threads()} CPU threads, "
             f"huggingface_hub {hub or 'not installed'}",
             cpu_line(), *cuda_lines(), nvml_line(), metrics_line(), inception, *cache_lines()]
    return lines, sha
