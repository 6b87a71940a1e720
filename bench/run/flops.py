"""Counted FLOPs and the fraction of a device's peak a measurement reached.

FLOPs are counted, not estimated: one batch of the op runs eagerly under `torch.utils.flop_counter`, which adds up
matrix multiplies, convolutions and attention (2 FLOPs per multiply-add; elementwise work is not counted, as is
usual for "model FLOPs utilisation"). Peaks are the vendors' dense (no sparsity) numbers for the precision the
measurement ran in; a device not listed gets no fraction rather than a guessed one.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

# (substring of torch.cuda.get_device_name, precision) -> dense peak FLOP/s. fp32 is the non-tensor-core rate,
# which is what PyTorch's default fp32 matmuls use (TF32 is off for matmuls unless a user turns it on).
PEAK_FLOPS: dict[tuple[str, str], float] = {
    ("H100 PCIe", "bf16"): 756e12, ("H100 PCIe", "fp16"): 756e12, ("H100 PCIe", "fp32"): 51e12,
    ("H100", "bf16"): 989e12, ("H100", "fp16"): 989e12, ("H100", "fp32"): 67e12,
    ("H200", "bf16"): 989e12, ("H200", "fp16"): 989e12, ("H200", "fp32"): 67e12,
    ("A100", "bf16"): 312e12, ("A100", "fp16"): 312e12, ("A100", "fp32"): 19.5e12,
}


def _register_cpu_attention() -> None:
    """torch's counter knows the CUDA attention kernels but not the CPU flash kernel SDPA picks on a CPU; without
    this, the fast path's attention would count as free there and its TFLOP/s read low."""
    from torch.utils.flop_counter import flop_registry, register_flop_formula, sdpa_flop_count

    op = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    if op is None or op in flop_registry:
        return

    @register_flop_formula(op)
    def _cpu_flash_attention_flop(query, key, value, *args, out_shape=None, **kwargs) -> int:  # shapes in
        return sdpa_flop_count(query, key, value)  # the counter passes shapes


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs of one call of `fn` (run once, eagerly, under the counter)."""
    from torch.utils.flop_counter import FlopCounterMode

    _register_cpu_attention()
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def peak_flops(device_name: str | None, precision: str) -> float | None:
    """The dense peak of a known device at `precision`, or None. The first (most specific) match wins."""
    if not device_name:
        return None
    for (name, prec), peak in PEAK_FLOPS.items():
        if name in device_name and prec == precision:
            return peak
    return None


def utilisation_metrics(flops_per_item: float, items_per_sec: float, device_name: str | None,
                        precision: str) -> dict[str, float]:
    """gflop_per_image, achieved_tflops and (on a listed device) peak_fraction."""
    achieved = flops_per_item * items_per_sec
    out = {"gflop_per_image": flops_per_item / 1e9, "achieved_tflops": achieved / 1e12}
    peak = peak_flops(device_name, precision)
    if peak:
        out["peak_fraction"] = achieved / peak
    return out
