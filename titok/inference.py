"""Inference options: switches that change how fast a model runs, never what it computes (beyond float tolerance).

Every option has a reference setting (the computation written out in its plainest form) and a fast one, so the
harness's speed task can measure each gain as a ratio in one run (`InferenceOptions.reference()` vs the
default). Options live on the model (`apply_inference_options`), not in its config: they are not part of what a
checkpoint means, and two numbers measured with different options are still the same model's.

  attention       "sdpa": `scaled_dot_product_attention` (fused kernels where the device has them);
                  "math": softmax(QK^T/sqrt(d))V written out as matrix products (the reference; the
                  original release itself already uses fused attention, so "math" is slower than it).
  cfg_batched     classifier-free guidance runs the conditional and unconditional passes as one batch of 2B
                  (one pass over the weights) instead of two passes of B.
  channels_last   the pixel decoders' convolutions run in NHWC, the layout oneDNN and cuDNN prefer.
  fused_upsample  nearest-2x upsampling followed by a 3x3 convolution is computed as four 2x2 convolutions on
                  the low-resolution map, one per output phase, then interleaved: the same sums with 16
                  multiply-adds per input pixel instead of 36 (upsampled pixels repeat, so their taps combine).
  compile         `torch.compile` of the heavy methods (tokenizer encode/decode, generator forward).
  cuda_graphs     `torch.compile(mode="reduce-overhead")`: CUDA graphs replay the fixed-shape sampling loop's
                  kernels without launch overhead. CUDA only.
  precision       "fp32" (the reference and the default) or "bf16": the heavy methods run under bf16 autocast on
                  the model's device (matrix products and convolutions in bf16, weights kept in fp32) and hand
                  back float32. Unlike the other options it changes results beyond float tolerance (a few percent
                  of encoded tokens differ); the VQ nearest-code search stays float32 whatever the precision
                  (titok/quantizer.py). Worth it on CPUs with native bf16 (`cpu_bf16_flags`: avx512_bf16, AMX).
                  A module whose `keep_fp32` attribute is True runs in float32 (autocast off, floating inputs
                  cast to float32) under any precision: the layers whose bf16 error was measured to move results
                  (bench/devtools/bf16_layers.py; today the two-stage pixel decoder's first convolution).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from titok.configs import ConfigMixin
from titok.errors import ConfigError, NotSupportedError

ATTENTION = ("sdpa", "math")
COMPILED_METHODS = ("encode", "decode", "forward_ids")  # the heavy methods of tokenizers and generators
PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16}
# Run under the precision's autocast: the heavy methods, and the generator's whole sampling loop, so that one
# autocast context spans its steps and each fp32 weight is cast to bf16 once per call, not once per step (autocast
# caches the casts of parameters until its outermost context exits): 1.4x on titok_l32 sampling at batch 1 here.
# The sampler's own arithmetic has no matrix product, so autocast leaves it in float32.
PRECISION_METHODS = (*COMPILED_METHODS, "generate")
KEEP_FP32 = "keep_fp32"  # the module attribute that keeps a layer in float32 whatever the precision option
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # /proc/cpuinfo flags of x86 CPUs with bf16 dot products


@dataclass(frozen=True)
class InferenceOptions(ConfigMixin):
    attention: str = "sdpa"
    cfg_batched: bool = True
    channels_last: bool = True
    fused_upsample: bool = True
    compile: bool = False
    cuda_graphs: bool = False
    precision: str = "fp32"

    def __post_init__(self) -> None:
        if self.attention not in ATTENTION:
            raise ConfigError(f"attention must be one of {ATTENTION}, got {self.attention!r}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {tuple(PRECISIONS)}, got {self.precision!r}")

    @classmethod
    def reference(cls) -> InferenceOptions:
        """Every option off: each step written out in its plainest form (what fast options are checked against)."""
        return cls(attention="math", cfg_batched=False, channels_last=False, fused_upsample=False)

    @classmethod
    def parse(cls, options: InferenceOptions | dict | None) -> InferenceOptions:
        """An options object from a dict of overrides on the defaults (unknown keys and wrong types refused)."""
        if options is None:
            return cls()
        if isinstance(options, InferenceOptions):
            return options
        from titok.registry import config_with_overrides

        return config_with_overrides(cls(), dict(options))


DEFAULT = InferenceOptions()


def options_of(module: nn.Module) -> InferenceOptions:
    """The options a model (or one of its submodules, once applied) runs with."""
    return getattr(module, "inference_options", DEFAULT)


def apply_inference_options(model: nn.Module, options: InferenceOptions | dict | None = None) -> nn.Module:
    """Set `options` on `model` and every submodule (in place; returns `model`).

    Compilation wraps the model's heavy methods (tokenizers: `encode`, `decode`; generators: `forward_ids`) in
    `torch.compile`; the first call with a new shape compiles, so time it after a warm-up.
    """
    options = InferenceOptions.parse(options)
    if options.cuda_graphs and not any(p.is_cuda for p in model.parameters()):
        raise NotSupportedError("not supported: cuda_graphs needs the model on a CUDA device")
    for name in PRECISION_METHODS:  # undo an earlier compile or precision: options are applied afresh each time
        model.__dict__.pop(name, None)
    for m in model.modules():
        m.inference_options = options
        if getattr(m.__dict__.get("forward"), "_keeps_fp32", False):  # undo an earlier precision's wrapper
            del m.forward
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    fmt = torch.channels_last if options.channels_last else torch.contiguous_format
    for conv in convs:
        conv.weight.data = conv.weight.data.contiguous(memory_format=fmt)
    if options.compile or options.cuda_graphs:
        mode = "reduce-overhead" if options.cuda_graphs else None
        for name in COMPILED_METHODS:
            if hasattr(type(model), name):  # the instance attribute was cleared above
                setattr(model, name, torch.compile(getattr(model, name), mode=mode, dynamic=False))
    if options.precision != "fp32":
        for name in PRECISION_METHODS:
            if hasattr(type(model), name):
                setattr(model, name, _in_precision(model, getattr(model, name), PRECISIONS[options.precision]))
        for m in model.modules():
            if getattr(m, KEEP_FP32, False):
                m.forward = _in_float32(m.forward)
    return model


def _in_float32(forward):
    """A module's `forward` run with autocast off on float32 copies of its floating inputs (output float32)."""

    @functools.wraps(forward)
    def run(*args, **kwargs):
        args = [a.float() if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args]
        device = next((a.device for a in args if isinstance(a, torch.Tensor)), torch.device("cpu"))
        autocast = (torch.autocast(device_type=device.type, enabled=False) if device.type in ("cpu", "cuda")
                    else contextlib.nullcontext())
        with autocast:
            return forward(*args, **kwargs)

    run._keeps_fp32 = True
    return run


def _in_precision(model: nn.Module, method, dtype: torch.dtype):
    """`method` run under `dtype` autocast on the model's device, its floating outputs handed back as float32.

    Float32 outputs keep what follows unchanged: the sampler's softmax, noise and pick, and the uint8 rounding of
    decoded images, read float32 logits and pixels (rounded to bf16 once, at the end of the network)."""

    @functools.wraps(method)
    def run(*args, **kwargs):
        device = next(model.parameters()).device
        autocast = (torch.autocast(device_type=device.type, dtype=dtype) if device.type in ("cpu", "cuda")
                    else contextlib.nullcontext())  # meta tensors (FLOP counting): nothing to cast
        with autocast:
            out = method(*args, **kwargs)
        return out.float() if isinstance(out, torch.Tensor) and out.is_floating_point() else out

    return run


def cpu_bf16_flags() -> list[str]:
    """The native-bf16 flags this CPU lists in /proc/cpuinfo (empty where it has none or there is no such file).

    Without them bf16 autocast still runs, emulated, and is usually slower than fp32."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return [f for f in NATIVE_BF16_FLAGS if f in flags]
    except OSError:
        pass
    return []


def cpu_capability() -> str:
    """The widest vector instruction set torch's CPU kernels dispatch to here (e.g. 'AVX512'), or 'unknown'."""
    try:
        return str(torch.backends.cpu.get_cpu_capability())
    except Exception:  # an older torch without the query: information, not an error
        return "unknown"


def to_memory_format(x: torch.Tensor, module: nn.Module) -> torch.Tensor:
    """x in the memory layout the module's options ask for (a no-op when it already is)."""
    fmt = torch.channels_last if options_of(module).channels_last else torch.contiguous_format
    return x.contiguous(memory_format=fmt)


# ------------------------------------------------------------------------------------------ fused upsample
def _phase_taps(w: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Collapse a 3-tap kernel axis into the 2 taps each output phase sees after nearest-2x upsampling.

    Phase 0 of output row 2i reads upsampled rows 2i-1, 2i, 2i+1 = input rows i-1, i, i: taps (w0, w1+w2).
    Phase 1 of output row 2i+1 reads rows 2i, 2i+1, 2i+2 = input rows i, i, i+1: taps (w0+w1, w2).
    """
    w0, w1, w2 = w.unbind(dim)
    return torch.stack([w0, w1 + w2], dim), torch.stack([w0 + w1, w2], dim)


def upsample_conv(x: torch.Tensor, conv: nn.Conv2d, fused: bool | None = None) -> torch.Tensor:
    """conv(nearest_upsample_2x(x)) for a 3x3, stride-1, padding-1 `conv`: (B, Cin, H, W) -> (B, Cout, 2H, 2W).

    `fused` defaults to the conv's `fused_upsample` option; the result is in the layout its options ask for.
    """
    if fused is None:
        fused = options_of(conv).fused_upsample
    if not fused:
        return to_memory_format(conv(F.interpolate(x, scale_factor=2.0, mode="nearest")), conv)
    if conv.kernel_size != (3, 3) or conv.stride != (1, 1) or conv.padding != (1, 1) or conv.groups != 1:
        raise ValueError("fused upsampling needs a 3x3 convolution with stride 1 and padding 1")
    b, _, h, w = x.shape
    xp = F.pad(x, (1, 1, 1, 1))  # zero border: the upsampled image's padding is the input's padding
    rows = _phase_taps(conv.weight, 2)  # 2 x (Cout, Cin, 2, 3)
    phases = []
    for a in (0, 1):
        cols = _phase_taps(rows[a], 3)  # 2 x (Cout, Cin, 2, 2)
        for c in (0, 1):
            # Phase (a, c) reads input rows i-1+a, i+a and columns j-1+c, j+c: offset a, c in padded coordinates.
            phases.append(F.conv2d(xp[:, :, a : a + h + 1, c : c + w + 1], cols[c], conv.bias))
    y = torch.stack(phases, dim=2)  # (B, Cout, 4, H, W), phase index = 2a + c
    y = y.view(b, -1, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3)  # (B, Cout, H, 2, W, 2)
    return to_memory_format(y.reshape(b, -1, 2 * h, 2 * w), conv)


def describe(options: InferenceOptions) -> str:
    """A short label for tables: 'reference', 'default', or the options that differ from the reference path."""
    if options == DEFAULT:
        return "default"
    extras = [name for name in ("compile", "cuda_graphs") if getattr(options, name)]
    extras += [options.precision] if options.precision != DEFAULT.precision else []
    plain = dataclasses.replace(options, compile=False, cuda_graphs=False, precision=DEFAULT.precision)
    if extras and plain == DEFAULT:
        return "+".join(["default", *extras])
    ref = InferenceOptions.reference()
    diff = [f.name if isinstance(getattr(options, f.name), bool) else f"{f.name}={getattr(options, f.name)}"
            for f in dataclasses.fields(options) if getattr(options, f.name) != getattr(ref, f.name)]
    return "+".join(diff) or "reference"
