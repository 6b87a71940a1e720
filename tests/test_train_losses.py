"""The release's training losses (titok/train): hinge GAN and LeCam terms, the discriminator, the perceptual networks
loaded through their real file path from seeded stand-ins, the generator's token loss and the weight-decay groups.
Hand-computed values on fixed tensors; tiny shapes, CPU, a few seconds in all."""

from __future__ import annotations

import math

import pytest
import torch

import titok
from titok.errors import MissingFileError
from titok.train.discriminator import (
    BlurDownsample,
    LeCamEMA,
    NLayerDiscriminator,
    hinge_d_loss,
    hinge_g_loss,
    lecam_loss,
)
from titok.train.losses import masked_token_loss, reconstruction_loss
from titok.train.param_groups import decays, weight_decay_groups
from titok.train.perceptual import LPIPS, LPIPS_CHANNELS, ConvNeXtSmall, PerceptualLoss, VGG16Features
from titok.weights import WeightsError

BF16 = torch.autocast("cpu", dtype=torch.bfloat16)


# ------------------------------------------------------------------------------------------- GAN terms
def test_hinge_terms_by_hand():
    real, fake = torch.tensor([0.5, 2.0]), torch.tensor([-2.0, 0.5])
    # relu(1 - real) = [0.5, 0] -> 0.25; relu(1 + fake) = [0, 1.5] -> 0.75; half their sum
    assert hinge_d_loss(real, fake).item() == pytest.approx(0.5)
    assert hinge_g_loss(fake).item() == pytest.approx(0.75)


def test_lecam_by_hand_and_its_ema():
    # relu(0.5 - 0.3)^2 + relu(0.1 - (-0.2))^2 = 0.04 + 0.09
    assert lecam_loss(*map(torch.tensor, (0.5, -0.2, 0.1, 0.3))).item() == pytest.approx(0.13)
    assert lecam_loss(*map(torch.tensor, (0.1, 0.4, 0.2, 0.3))).item() == 0.0  # both sides inside their margins
    ema = LeCamEMA(decay=0.9)
    real, fake = torch.full((2, 1, 4, 4), 2.0), torch.full((2, 1, 4, 4), -1.0)
    assert ema.loss(real.mean(), fake.mean()).item() == pytest.approx(2.0**2 + 1.0**2)  # EMAs start at 0
    ema.update(real.mean(), fake.mean())
    ema.update(real.mean(), fake.mean())
    assert ema.ema_real.item() == pytest.approx(2.0 * (1 - 0.9**2))  # 0.38
    assert ema.ema_fake.item() == pytest.approx(-1.0 * (1 - 0.9**2))
    assert set(ema.state_dict()) == {"ema_real", "ema_fake"}  # saved with the checkpoint


# ------------------------------------------------------------------------------------------- discriminator
def test_discriminator_is_the_releases():
    disc = NLayerDiscriminator()
    # The release's NLayerDiscriminator(hidden_channels=128, num_stages=3), in_channel_mult (1, 1, 2, 4): 5x5 stem
    # 3->128, 3x3 convs 128->128, 128->256, 256->512 each with GroupNorm (weight + bias), then 1x1 512->512 and
    # 5x5 512->1; counted by hand, = the release's count in vectors-train/manifest_discriminator.json.
    by_hand = (3 * 128 * 25 + 128) + (128 * 128 * 9 + 128 + 256) + (128 * 256 * 9 + 256 + 512) + (
        256 * 512 * 9 + 512 + 1024) + (512 * 512 + 512) + (512 * 25 + 1)
    assert sum(p.numel() for p in disc.parameters()) == by_hand == 1_909_889
    shapes = {k: tuple(v.shape) for k, v in disc.state_dict().items()}
    assert (shapes["blocks.0.0.weight"], shapes["blocks.1.0.weight"], shapes["blocks.2.0.weight"]) == (
        (128, 128, 3, 3), (256, 128, 3, 3), (512, 256, 3, 3))
    assert shapes["to_logits.0.weight"] == (512, 512, 1, 1) and shapes["to_logits.2.weight"] == (1, 512, 5, 5)
    assert {"block_in.0.weight", "blocks.2.0.weight", "blocks.2.2.weight", "to_logits.2.weight"} <= set(
        disc.state_dict())
    small = NLayerDiscriminator(channels=32, stages=2)
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    out = small(x)
    assert out.shape == (2, 1, 16, 16) and out.dtype == torch.float32
    with BF16:  # the release keeps the discriminator in float32 under mixed precision
        under_autocast = small(x)
    assert under_autocast.dtype == torch.float32 and torch.equal(under_autocast, out)


def test_blur_downsample_by_hand():
    blur = BlurDownsample(4)
    x = torch.zeros(1, 1, 4, 4)
    x[0, 0, 1, 1] = 64.0
    out = blur(x)  # pad 1 each side, 4x4 kernel (1,3,3,1)^T (1,3,3,1) / 64 at stride 2
    assert out.shape == (1, 1, 2, 2)
    # Output (0,0) covers padded rows/cols 0..3 = input -1..2: the impulse at (1,1) sits at tap (2,2) -> 3*3/64*64.
    assert out[0, 0, 0, 0].item() == pytest.approx(9.0)
    assert out[0, 0, 1, 1].item() == pytest.approx(1.0)  # taps (0,0): 1*1
    assert blur(torch.ones(1, 2, 5, 5)).shape == (1, 2, 3, 3)  # odd sizes round up, as TF "same"
    assert blur(torch.ones(1, 1, 6, 6))[0, 0, 1, 1].item() == pytest.approx(1.0)  # normalised: flat stays flat


def test_discriminator_channels_must_suit_groupnorm():
    with pytest.raises(ValueError, match="multiple of 32"):
        NLayerDiscriminator(channels=48)


# ------------------------------------------------------------------------------------------- pixel and token losses
def test_reconstruction_by_hand():
    a, b = torch.zeros(1, 3, 2, 2), torch.zeros(1, 3, 2, 2)
    b[0, 0, 0, 0] = 2.0
    assert reconstruction_loss(a, b, "l2").item() == pytest.approx(4.0 / 12)
    assert reconstruction_loss(a, b, "l1").item() == pytest.approx(2.0 / 12)


def test_generator_token_loss_by_hand():
    # One image, two tokens, two codes. Token 0 masked, uniform logits; token 1 unmasked, p = (3/4, 1/4).
    logits = torch.tensor([[[0.0, 0.0], [math.log(3.0), 0.0]]])
    targets, masks = torch.tensor([[0, 0]]), torch.tensor([[True, False]])
    eps = 0.1  # label smoothing: (1 - eps) * nll + eps * mean over codes of -log p
    ce0 = math.log(2.0)
    ce1 = (1 - eps) * math.log(4 / 3) + eps * (math.log(4 / 3) + math.log(4.0)) / 2
    want = (1.0 * ce0 + 0.1 * ce1) / (1.0 + 0.1)  # masked weigh 1, unmasked 0.1, normalised by the weights
    got = masked_token_loss(logits, targets, masks, label_smoothing=eps, unmasked_weight=0.1)
    assert got.item() == pytest.approx(want, rel=1e-6)
    assert masked_token_loss(logits, targets, masks).item() == pytest.approx(ce0)  # plain masked CE
    # Per sample, then over the batch: a second image with 2 masked tokens does not outweigh the first.
    two = masked_token_loss(torch.cat([logits, logits]), torch.cat([targets, targets]),
                            torch.tensor([[True, False], [True, True]]))
    nll1 = math.log(4 / 3)
    assert two.item() == pytest.approx((ce0 + (ce0 + nll1) / 2) / 2)


# ------------------------------------------------------------------------------------------- weight decay groups
def test_weight_decay_groups_follow_the_release():
    torch.manual_seed(0)
    gen = titok.load_generator("titok_tiny_bert")
    tok = titok.load_tokenizer("titok_tiny_vq")
    expected = {
        "model.embeddings.word_embeddings.weight": False, "model.embeddings.LayerNorm.weight": False,
        "model.encoder.layer.0.attention.self.query.weight": True, "model.encoder.layer.0.attention.self.query.bias":
        False, "model.encoder.layer.0.output.LayerNorm.weight": False, "model.lm_head.weight": True,
    }
    named = dict(gen.named_parameters())
    for name, decayed in expected.items():
        assert decays(name, named[name]) is decayed, name
    tok_named = dict(tok.named_parameters())
    for name, decayed in {"latent_tokens": False, "encoder.positional_embedding": False,
                          "encoder.class_embedding": False, "encoder.ln_pre.weight": False,
                          "encoder.transformer.0.attn.in_proj_weight": True,
                          "encoder.transformer.0.attn.in_proj_bias": False, "quantize.embedding.weight": False,
                          "encoder.transformer.0.mlp.c_fc.weight": True}.items():
        assert decays(name, tok_named[name]) is decayed, name
    no_decay, decay = weight_decay_groups(gen.named_parameters(), 0.03)
    assert (no_decay["weight_decay"], decay["weight_decay"]) == (0.0, 0.03)
    assert len(no_decay["params"]) + len(decay["params"]) == len(named)
    assert all(p.ndim >= 2 for p in decay["params"])


# ------------------------------------------------------------------------------------------- perceptual networks
def _lpips_standin(folder, seed=0):
    """A seeded VGG16 (torchvision key names) and LPIPS heads (the lpips package's key names), saved as files."""
    torch.manual_seed(seed)
    vgg_path, heads_path = folder / "vgg16-standin.pth", folder / "lpips-vgg-standin.pth"
    torch.save(VGG16Features().state_dict(), vgg_path)
    torch.save({f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1) for i, c in enumerate(LPIPS_CHANNELS)}, heads_path)
    return vgg_path, heads_path


def test_lpips_from_files_by_hand(tmp_path, caplog):
    vgg_path, heads_path = _lpips_standin(tmp_path)
    with caplog.at_level("WARNING", logger="titok.train.perceptual"):
        net = LPIPS.from_files(vgg_path, heads_path)
    assert "is not torchvision's vgg16 weights" in caplog.text  # a stand-in loads, and is called what it is
    g = torch.Generator().manual_seed(1)
    x, y = torch.rand(2, 3, 32, 32, generator=g), torch.rand(2, 3, 32, 32, generator=g)
    d = net(x, y)
    assert d.shape == (2,) and (d > 0).all() and torch.equal(net(x, x), torch.zeros(2))
    # By hand from the loaded layers: LPIPS scaling, the five relu taps, unit norm over channels, the heads'
    # per-channel weights, mean over space, sum over taps.
    heads = torch.load(heads_path)
    feats = [net.vgg(((t * 2 - 1) - net.shift) / net.scale) for t in (x, y)]
    want = sum(((fx / fx.norm(dim=1, keepdim=True) - fy / fy.norm(dim=1, keepdim=True)) ** 2
                * heads[f"lin{i}.model.1.weight"].view(1, -1, 1, 1)).sum(1).mean((1, 2))
               for i, (fx, fy) in enumerate(zip(*feats, strict=True)))
    torch.testing.assert_close(d, want, rtol=1e-4, atol=1e-6)
    with pytest.raises(MissingFileError, match=r"loss.lpips_heads_weights: .*nope.pth"):
        LPIPS.from_files(vgg_path, tmp_path / "nope.pth")
    torch.save({"lin0.model.1.weight": torch.rand(1, 64, 1, 1)}, tmp_path / "partial.pth")
    with pytest.raises(WeightsError, match="partial.pth"):
        LPIPS.from_files(vgg_path, tmp_path / "partial.pth")


def test_convnext_small_matches_torchvision_layout(tmp_path):
    with torch.device("meta"):  # shapes only: no 50M-parameter initialisation
        net = ConvNeXtSmall()
    sd = net.state_dict()
    assert sum(p.numel() for p in net.parameters()) == 50_223_688  # torchvision's convnext_small
    shapes = {"features.0.0.weight": (96, 3, 4, 4), "features.1.0.layer_scale": (96, 1, 1),
              "features.1.0.block.0.weight": (96, 1, 7, 7), "features.1.0.block.2.weight": (96,),
              "features.1.0.block.3.weight": (384, 96), "features.2.1.weight": (192, 96, 2, 2),
              "features.5.26.block.5.weight": (384, 1536), "classifier.0.weight": (768,),
              "classifier.2.weight": (1000, 768)}
    for key, shape in shapes.items():
        assert tuple(sd[key].shape) == shape, key
    with pytest.raises(MissingFileError, match=r"loss.convnext_weights: .*convnext_small-0c510722.pth"):
        ConvNeXtSmall.from_file(tmp_path / "convnext_small-0c510722.pth")


def test_perceptual_mix_by_hand_in_float32(tmp_path):
    torch.manual_seed(0)
    convnext = ConvNeXtSmall().eval().requires_grad_(False)  # seeded stand-in; its file path is tested (slow) below
    lpips = LPIPS.from_files(*_lpips_standin(tmp_path))
    loss = PerceptualLoss(lpips, convnext, 1.0, 0.1)  # the single-stage recipe's "lpips-convnext_s-1.0-0.1"
    g = torch.Generator().manual_seed(2)
    x, y = torch.rand(1, 3, 32, 32, generator=g), torch.rand(1, 3, 32, 32, generator=g)
    got = loss(x, y)
    up = [torch.nn.functional.interpolate(t, size=224, mode="bilinear", antialias=True) for t in (x, y)]
    logits = [convnext((t - loss.mean) / loss.std) for t in up]  # the 1000 ImageNet logits, as the release
    convnext_mse = ((logits[0] - logits[1]) ** 2).mean()
    torch.testing.assert_close(got, (1.0 * lpips(x, y).mean() + 0.1 * convnext_mse) / 1.1, rtol=1e-5, atol=1e-7)
    with BF16:
        assert loss(x, y).dtype == torch.float32
    alone = PerceptualLoss(None, convnext, 0.0, 1.0)  # stage 2's "convnext_s"
    torch.testing.assert_close(alone(x, y), convnext_mse, rtol=1e-5, atol=1e-7)
    recon = x.clone().requires_grad_()  # gradients reach the reconstruction, never the target's frozen pass
    loss(recon, y).backward()
    assert recon.grad.abs().sum() > 0 and y.grad is None


@pytest.mark.slow
def test_convnext_loads_from_a_torchvision_style_file(tmp_path):
    """A 200 MB stand-in file through the real loading path (~10 s)."""
    torch.manual_seed(0)
    net = ConvNeXtSmall()
    torch.save(net.state_dict(), tmp_path / "convnext_small-standin.pth")
    loaded = ConvNeXtSmall.from_file(tmp_path / "convnext_small-standin.pth")
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    assert torch.equal(loaded(x), net.eval()(x)) and not any(p.requires_grad for p in loaded.parameters())
    torch.save({k: v for k, v in net.state_dict().items() if not k.startswith("classifier")}, tmp_path / "cut.pth")
    with pytest.raises(WeightsError, match="cut.pth.*classifier"):
        ConvNeXtSmall.from_file(tmp_path / "cut.pth")
