"""The nearest-code search runs in float32 under any autocast (tokenizer codes and the stage-1 teacher's labels).

Without autocast switched off inside the search, a bf16 autocast recasts the distance matmul and a few percent of
codes flip silently; these tests compare codes under autocast with the float32 codes, code for code.
"""

from __future__ import annotations

import pytest
import torch

import baselines  # noqa: F401  (registers the MaskGIT-VQGAN teacher presets)
from titok.quantizer import VectorQuantizer
from titok.registry import create

BF16 = torch.autocast("cpu", dtype=torch.bfloat16)


def _quantizer(num_codes: int, dim: int, l2: bool) -> VectorQuantizer:
    torch.manual_seed(0)
    vq = VectorQuantizer(num_codes, dim, use_l2_norm=l2)
    torch.nn.init.normal_(vq.embedding.weight)  # spread codes: the release-sized case where bf16 flips codes
    return vq


@pytest.mark.parametrize("num_codes, dim, l2", [(4096, 12, True), (1024, 256, False), (8192, 64, False)])
def test_codes_under_bf16_autocast_equal_fp32_codes(num_codes, dim, l2):
    vq = _quantizer(num_codes, dim, l2)
    z = torch.randn(4, 64, dim, generator=torch.Generator().manual_seed(1))
    want = vq.nearest(z)
    with BF16:
        got = vq.nearest(z)
        # What the loop did before the fix: the same search with autocast left on (shows the test can fail).
        flat = torch.nn.functional.normalize(z.reshape(-1, dim), dim=-1) if l2 else z.reshape(-1, dim)
        book = vq._codebook()
        naive = (flat.pow(2).sum(1, keepdim=True) + book.pow(2).sum(1) - 2 * flat @ book.t()).argmin(1)
    assert torch.equal(got, want)
    assert (naive.view_as(want) != want).any()


def test_forward_under_autocast_is_fp32():
    vq = _quantizer(4096, 12, True)
    z = torch.randn(2, 32, 12, generator=torch.Generator().manual_seed(2))
    ref = vq(z)
    with BF16:
        out = vq(z.bfloat16())  # a bf16 encoder hands the quantizer bf16 tokens
    assert torch.equal(out.codes, vq.nearest(z.bfloat16().float()))
    assert out.loss.dtype == torch.float32
    with BF16:
        looked = vq.lookup(ref.codes)
    assert looked.dtype == torch.float32 and torch.equal(looked, vq.lookup(ref.codes))


def test_teacher_labels_under_autocast_use_fp32_search():
    torch.manual_seed(0)
    teacher = create("tokenizer", "maskgit_vqgan_tiny").eval()
    x = torch.rand(2, 3, teacher.image_size, teacher.image_size, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        z = teacher.encoder(x).permute(0, 2, 3, 1).reshape(-1, teacher.quantize.dim)  # (128, Z) float32
        # A crowded codebook (pairs of near-identical codes next to the features), where bf16 distances tie wrongly.
        near = z[:32] + 1e-3 * torch.randn(32, z.shape[1], generator=torch.Generator().manual_seed(4))
        teacher.quantize.embedding.weight.copy_(torch.cat([z[:32], near]))
    with torch.no_grad(), BF16:
        labels = teacher.encode(x)
        z_bf16 = teacher.encoder(x)  # the encoder itself runs in bf16, as on the GPU
        naive = (-2 * z_bf16.permute(0, 2, 3, 1).reshape(-1, z.shape[1]) @ teacher.quantize.embedding.weight.t()
                 + teacher.quantize.embedding.weight.pow(2).sum(1)).argmin(1)
    want = teacher.quantize.nearest(z_bf16.float().permute(0, 2, 3, 1)).flatten(1)  # autocast off entirely
    assert torch.equal(labels, want)
    assert (naive.view_as(want) != want).any()  # the bf16 search would have given other labels
