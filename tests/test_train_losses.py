"""The release's training losses (titok/train): hinge GAN and LeCam terms, the discriminator, the perceptual networks
loaded through their real file path from seeded stand-ins, the generator's token loss and the weight-decay groups.
Hand-computed values on fixed tensors; tiny shapes, CPU, a few seconds in all."""

from __future__ import annotations

import math

import pytest
import torch

import titok
from titok.errors import MissingFileError
from titok.train.config import TrainConfig
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
    # The release normalises over the whole batch: a second image with 2 masked tokens weighs twice the first;
    # norm="sample" (our option) averages per image first.
    pair = torch.cat([logits, logits]), torch.cat([targets, targets]), torch.tensor([[True, False], [True, True]])
    nll1 = math.log(4 / 3)
    assert masked_token_loss(*pair).item() == pytest.approx((ce0 + ce0 + nll1) / 3)
    assert masked_token_loss(*pair, norm="sample").item() == pytest.approx((ce0 + (ce0 + nll1) / 2) / 2)


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


# ------------------------------------------------------------------------------------------- formula, sign, separation
# Issue 20 part 5: each term's value on hand-made inputs against a formula written here, its sign by the direction
# one SGD step moves what it acts on, and gradients kept apart between the tokenizer and the discriminator through
# the loop itself. Stand-ins: a 1x1-conv "discriminator" whose logits are easy to place.
def _conv_disc(weight: float, trainable: bool = True) -> torch.nn.Conv2d:
    d = torch.nn.Conv2d(3, 1, 1)
    with torch.no_grad():
        d.weight.fill_(weight / 3), d.bias.zero_()  # D(x) = weight * channel mean of x
    return d.requires_grad_(trainable)


class _Logits(torch.nn.Module):
    """Returns fixed logits: `fake` for one image batch, cat(real, fake) for the discriminator's joint pass."""

    def __init__(self, fake, real=None):
        super().__init__()
        self.fake, self.real = fake, real

    def forward(self, x):
        return self.fake if self.real is None else torch.cat([self.real, self.fake])


def _loss_section(**kw):
    from titok.train.config import LossSection
    return LossSection(**kw)


def test_pixel_loss_composition_by_hand():
    from titok.quantizer import QuantizerOutput
    from titok.train.tasks import pixel_loss_terms

    lc = _loss_section(recon_weight=2.0, perceptual_weight=0.3, adversarial_weight=0.05, quantizer_weight=0.7,
                       kl_weight=1e-2)
    real, recon = torch.zeros(2, 3, 2, 2), torch.zeros(2, 3, 2, 2)
    recon[0, 0, 0, 0] = 1.2  # MSE = 1.44 / 24
    q = QuantizerOutput(torch.empty(0), torch.empty(0), torch.tensor(0.5), torch.tensor(0.1), torch.tensor(0.4))
    fake_logits = torch.tensor([[-0.5, 1.5], [2.0, 0.0]])  # mean 0.75
    perceptual = lambda a, b: torch.tensor(0.25)  # noqa: E731
    loss, logs = pixel_loss_terms(lc, real, recon, perceptual, _Logits(fake_logits), vq=q)
    mse = 1.44 / 24
    want = 2.0 * mse + 0.3 * 0.25 + 0.7 * 0.5 + 0.05 * -0.75
    assert loss.item() == pytest.approx(want, rel=1e-6)
    assert logs["reconstruction_loss"].item() == pytest.approx(2.0 * mse, rel=1e-6)  # logged weighted, as the release
    assert logs["weighted_gan_loss"].item() == pytest.approx(-0.0375) and logs["gan_loss"].item() == -0.75
    assert logs["quantizer_loss"].item() == pytest.approx(0.35) and logs["commitment_loss"].item() == pytest.approx(0.1)
    assert (logs["discriminator_factor"].item(), logs["d_weight"].item()) == (1.0, pytest.approx(0.05))
    before, logs0 = pixel_loss_terms(lc, real, recon, perceptual, None, vq=q)  # before disc_start: no GAN term
    assert before.item() == pytest.approx(want + 0.05 * 0.75, rel=1e-6) and logs0["discriminator_factor"] == 0
    kl = torch.tensor([3.0, 5.0])  # per sample; the batch mean is weighted (the release: sum / B)
    with_kl, logs_kl = pixel_loss_terms(lc, real, recon, perceptual, None, kl=kl)
    assert with_kl.item() == pytest.approx(2.0 * mse + 0.3 * 0.25 + 1e-2 * 4.0, rel=1e-6)
    assert logs_kl["kl_loss"].item() == pytest.approx(0.04)


def test_proxy_code_loss_by_hand():
    from titok.quantizer import QuantizerOutput
    from titok.train.tasks import proxy_code_terms

    logits = torch.zeros(2, 3, 1, 2)  # (B, K, G, G'): 3 codes, uniform except one position
    logits[1, 2, 0, 1] = math.log(4.0)  # p = (1/6, 1/6, 4/6) there
    target = torch.tensor([[[0, 1]], [[2, 0]]])
    q = QuantizerOutput(torch.empty(0), torch.empty(0), torch.tensor(0.3), torch.tensor(0.06), torch.tensor(0.24))
    loss, logs = proxy_code_terms(_loss_section(quantizer_weight=0.5), logits, target, q)
    ce = (3 * math.log(3.0) + math.log(6.0)) / 4  # target 0 there: -log(1/6); the mean over all B * G * G' positions
    assert logs["reconstruction_loss"].item() == pytest.approx(ce, rel=1e-6)
    assert loss.item() == pytest.approx(ce + 0.5 * 0.3, rel=1e-6)
    assert logs["quantizer_loss"].item() == pytest.approx(0.15)


def test_vq_losses_by_hand_and_their_directions():
    from titok.quantizer import VectorQuantizer

    vq = VectorQuantizer(2, 2, use_l2_norm=False, commitment_cost=0.25)
    with torch.no_grad():
        vq.embedding.weight.copy_(torch.tensor([[0.0, 0.0], [1.0, 1.0]]))
    z = torch.tensor([[0.2, 0.1], [0.9, 0.6]], requires_grad=True)
    q = vq(z)
    sq = (0.04 + 0.01 + 0.01 + 0.16) / 4  # mean squared distance to the nearest codes (0 and 1)
    assert q.codes.tolist() == [0, 1]
    assert (q.commitment.item(), q.codebook.item(), q.loss.item()) == (
        pytest.approx(0.25 * sq), pytest.approx(sq), pytest.approx(1.25 * sq))
    q.loss.backward()
    assert z.grad is not None and vq.embedding.weight.grad is not None
    with torch.no_grad():  # one SGD step: the tokens move toward their codes and the codes toward their tokens
        z_new, codes_new = z - 1.0 * z.grad, vq.embedding.weight - 1.0 * vq.embedding.weight.grad
        codes_old = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    assert ((z_new - codes_old).norm(dim=1) < (z.detach() - codes_old).norm(dim=1)).all()
    assert ((codes_new - z.detach()).norm(dim=1) < (codes_old - z.detach()).norm(dim=1)).all()
    assert torch.equal(q.quantized, codes_old.index_select(0, q.codes) + (z - z.detach()))  # straight-through


def test_kl_by_hand_and_its_direction():
    from titok.quantizer import DiagonalGaussian

    moments = torch.tensor([[[0.5, -1.0, 0.2, 0.4]]], requires_grad=True)  # (B=1, N=1, 2C): means, log-variances
    post = DiagonalGaussian.from_moments(moments)
    m, lv = [0.5, -1.0], [0.2, 0.4]
    want = 0.5 * sum(mi**2 + math.exp(li) - 1 - li for mi, li in zip(m, lv, strict=True))
    assert post.kl().item() == pytest.approx(want, rel=1e-6)
    post.kl().sum().backward()
    after = moments.detach() - 0.1 * moments.grad  # one SGD step pulls the posterior toward N(0, 1)
    assert (after[0, 0, :2].abs() < torch.tensor([0.5, 1.0])).all() and (after[0, 0, 2:] < torch.tensor(lv)).all()


def test_discriminator_loss_by_hand():
    from titok.train.discriminator import discriminator_loss

    real, fake = torch.tensor([0.5, 2.0]), torch.tensor([-2.0, 0.5])  # hinge 0.5 (test_hinge_terms_by_hand)
    ema = LeCamEMA(decay=0.9)
    ema.ema_real.fill_(0.1), ema.ema_fake.fill_(0.3)
    loss, logs, means = discriminator_loss(_Logits(fake, real), torch.zeros(2), torch.zeros(2), ema, 0.5)
    lecam = max(1.25 - 0.3, 0) ** 2 + max(0.1 - (-0.75), 0) ** 2  # against the EMAs from BEFORE the step
    assert loss.item() == pytest.approx(0.5 + 0.5 * lecam) and logs["lecam_loss"].item() == pytest.approx(0.5 * lecam)
    assert means.tolist() == [1.25, -0.75] and ema.ema_real.item() == pytest.approx(0.1)  # not updated here


def test_generator_adversarial_term_raises_the_fake_logits():
    """One SGD step on the generator's loss (only its adversarial term on) must make D rate the fakes as more real."""
    from titok.train.tasks import pixel_loss_terms

    disc = _conv_disc(1.0, trainable=False)
    recon = torch.full((2, 3, 4, 4), 0.3, requires_grad=True)
    loss, _ = pixel_loss_terms(_loss_section(recon_weight=0.0, adversarial_weight=1.0), torch.zeros_like(recon),
                               recon, None, disc)
    loss.backward()
    with torch.no_grad():
        before, after = disc(recon).mean().item(), disc(recon - 10.0 * recon.grad).mean().item()
    assert after > before + 0.05


def test_hinge_raises_real_and_lowers_fake_logits():
    """One SGD step of the discriminator on its loss (no LeCam): real logits up, fake logits down."""
    from titok.train.discriminator import discriminator_loss

    disc = _conv_disc(0.5)
    real, fake = torch.full((2, 3, 4, 4), 0.4), torch.full((2, 3, 4, 4), -0.2)  # logits 0.2, -0.1: inside the margins
    loss, _, _ = discriminator_loss(disc, real, fake, None, 0.0)
    loss.backward()
    with torch.no_grad():
        r0, f0 = disc(real).mean().item(), disc(fake).mean().item()
        for p in disc.parameters():
            p -= 1.0 * p.grad
        r1, f1 = disc(real).mean().item(), disc(fake).mean().item()
    assert r1 > r0 + 0.05 and f1 < f0 - 0.05


def test_lecam_pulls_the_logits_toward_the_other_sides_ema():
    """Hinge saturated (zero gradient), EMAs at 0: one SGD step on LeCam alone lowers the real logits and raises the
    fake ones (relu(real - ema_fake)^2 + relu(ema_real - fake)^2 shrinks)."""
    from titok.train.discriminator import discriminator_loss

    disc = _conv_disc(2.0)
    real, fake = torch.ones(2, 3, 4, 4), -torch.ones(2, 3, 4, 4)  # logits 2 and -2: beyond the hinge margins
    loss, logs, _ = discriminator_loss(disc, real, fake, LeCamEMA(0.9), 1.0)
    assert logs["lecam_loss"].item() == pytest.approx(8.0) and loss.item() == pytest.approx(8.0)
    loss.backward()
    with torch.no_grad():
        for p in disc.parameters():
            p -= 0.01 * p.grad
        r1, f1 = disc(real).mean().item(), disc(fake).mean().item()
    assert r1 < 2.0 - 0.05 and f1 > -2.0 + 0.05


# ------------------------------------------------------------------------------------------- through the loop
def _gan_run(tmp_path, name, *overrides, steps=1):
    from titok.train.config import apply_overrides
    from titok.train.loop import train

    grads = {}
    config = apply_overrides(TrainConfig(), [
        f"run.out={tmp_path / name}", "run.image_every=0", "run.log_every=1", "run.threads=1", "data.limit=4",
        "optim.batch_size=2", f"schedule.steps={steps}", "optim.lr=1e-3", "loss.disc_start=0",
        "loss.disc_channels=32", "loss.disc_layers=1", "data.source=builtin:procedural", *overrides])
    result = train(config, on_gradients=lambda step, g: grads.setdefault(step, g))
    return result, grads


def _split(grads):
    model = {k: v for k, v in grads.items() if not k.startswith("disc/")}
    return model, {k: v for k, v in grads.items() if k.startswith("disc/")}


def test_gradients_stay_apart_in_the_loop(tmp_path):
    """The discriminator's loss moves no tokenizer weight, the tokenizer's loss no discriminator weight: runs that
    differ only in the LeCam weight (the discriminator's loss) give the tokenizer the same gradients, runs that
    differ only in the adversarial weight (the tokenizer's loss) give the discriminator the same gradients."""
    base, g0 = _gan_run(tmp_path, "base", "loss.lecam_weight=0.001", "loss.adversarial_weight=0.1")
    _, g_lecam = _gan_run(tmp_path, "lecam", "loss.lecam_weight=1.0", "loss.adversarial_weight=0.1")
    _, g_adv = _gan_run(tmp_path, "adv", "loss.lecam_weight=0.001", "loss.adversarial_weight=0.5")
    (m0, d0), (m1, d1), (m2, d2) = _split(g0[0]), _split(g_lecam[0]), _split(g_adv[0])
    assert d0 and m0.keys() == m1.keys() == m2.keys()
    assert all(torch.equal(m0[k], m1[k]) for k in m0)  # the discriminator's loss changed; the tokenizer's grads not
    assert any(not torch.equal(d0[k], d1[k]) for k in d0)  # (it did change)
    assert all(torch.equal(d0[k], d2[k]) for k in d0)  # the tokenizer's loss changed; the discriminator's grads not
    assert any(not torch.equal(m0[k], m2[k]) for k in m0)  # (it did change)


def test_lecam_penalty_uses_the_emas_from_before_each_step(tmp_path):
    """In the loop, step n's LeCam compares against the EMAs after step n - 1 and the EMAs then fold in step n's
    mean logits: recomputed here from the logged means, with decay 0.5 so an update before the penalty shows."""
    from titok.train import checkpoint as ckpt_io

    w, decay = 0.7, 0.5
    result, _ = _gan_run(tmp_path, "lecam", f"loss.lecam_weight={w}", f"loss.lecam_decay={decay}", steps=2)
    ema_r = ema_f = 0.0
    for record in result.history:
        mr, mf = record["logits_real"], record["logits_fake"]
        want = w * (max(mr - ema_f, 0.0) ** 2 + max(ema_r - mf, 0.0) ** 2)
        assert record["lecam_loss"] == pytest.approx(want, rel=1e-5, abs=1e-9), record["step"]
        ema_r, ema_f = decay * ema_r + (1 - decay) * mr, decay * ema_f + (1 - decay) * mf
    assert min(r["lecam_loss"] for r in result.history) > 1e-6  # not a vacuous comparison
    saved = ckpt_io.load(tmp_path / "lecam" / "checkpoint.pt")["lecam"]
    assert (saved["ema_real"].item(), saved["ema_fake"].item()) == (pytest.approx(ema_r, rel=1e-5),
                                                                    pytest.approx(ema_f, rel=1e-5))


def test_stage1_teacher_codes_are_float32_under_autocast():
    """The release calls the stage-1 teacher outside accelerate's autocast: its proxy codes must not depend on
    run.precision. Our task under bf16 autocast gives the codes of the teacher in float32."""
    from titok.train.config import apply_overrides
    from titok.train.tasks import build_task

    torch.manual_seed(0)
    task = build_task(apply_overrides(TrainConfig(), ["model.task=proxy_codes", "model.preset=titok_tiny_2stage"]))
    tok, teacher = task.model, task.teacher
    seen = []
    original = teacher.encode
    teacher.encode = lambda x: (seen.append((x.dtype, torch.is_autocast_enabled("cpu"))), original(x))[1]
    x = torch.rand(2, 3, tok.image_size, tok.image_size, generator=torch.Generator().manual_seed(1))
    with BF16:
        task({"images": x})
    assert seen == [(torch.float32, False)]
