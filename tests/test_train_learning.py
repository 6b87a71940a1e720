"""Training learns content, not just the mean image: the tiny single-stage VQ tokenizer, trained on a handful of
built-in photographs, reconstructs them clearly better than predicting the per-pixel mean image of the set.

The default tiny tests stop near that plateau (the mean image is what a collapsed codebook decodes to), so a
falling loss alone does not show learning. Why this configuration: at lr >= 2e-3 the tiny VQ collapses to a few
codes and stays at the mean image; at 1e-3 with 8 images (the whole set every step, no crop or flip, so the
training set is exactly the images the baseline is computed on) it leaves the plateau after ~300 steps; by step 800
the training loss is 0.22-0.28 of the mean-image error (seeds 0-2) and the eval-mode error 0.29 (seed 0, EMA alike).
About 15 s on one CPU thread.

The structured-image tests below go further (issue 21.4): a tokenizer that beats the mean image may still only
have memorised a few whole images. On procedural images with independent parts, the tiny VQ tokenizer must
reconstruct HELD-OUT images at under half the error of the nearest of 64 whole-image prototypes (k-means on the
training images, k = its codebook size) and of the mean image; measured 0.0083 against 0.036 and 0.064 (1000
steps at batch 16; it leaves the mean-image plateau near step 450, so the margin holds if that comes 300 steps
later). A tiny generator trained on its codes must then predict masked codes (half of them masked) with a
cross-entropy under 0.65 of the codes' unigram entropy and under 0.9 of the mean per-position entropy; measured
1.71 against 3.00 and 2.07 nats (600 steps at lr 3e-3). Planted bugs each test fails on: the reconstruction
term's sign flipped (recon 0.43), the decoder's input detached from the encoder (stays at the mean image), the
token loss's sign flipped (CE 164 nats), the generator's head fed detached features (CE 2.19). Together about
30 s of CPU time (75 s wall on the 2 shared cores here): slow-marked.
"""

from __future__ import annotations

import pytest
import torch

import titok
from titok.data.images import builtin_images
from titok.train.config import TrainConfig, apply_overrides
from titok.train.loop import train


@pytest.mark.slow
def test_single_stage_vq_learns_beyond_the_mean_image(tmp_path):
    x = builtin_images("skimage", 32, 8, 0).float() / 255  # (8, 3, 32, 32): the images the run trains on
    mean_image_mse = float(((x - x.mean(0, keepdim=True)) ** 2).mean())  # about 0.051
    config = apply_overrides(TrainConfig(), [
        f"run.out={tmp_path}", "run.threads=1", "run.image_every=0", "run.log_every=100", "run.ckpt_every=10000",
        "model.task=single_stage", "model.preset=titok_tiny_vq", "data.source=builtin:skimage", "data.limit=8",
        "data.random_crop=false", "data.hflip=false", "optim.batch_size=8", "optim.lr=1e-3",
        "schedule.steps=800", "schedule.warmup_steps=20", "loss.disc_start=-1"])
    result = train(config)

    def recon_mse(model) -> float:  # the trained model on the training images, in eval mode (no training noise)
        model.eval()
        with torch.no_grad():
            return float(((model.decode(model.encode(x)).clamp(0, 1) - x) ** 2).mean())

    trained = recon_mse(result.model)
    ema = recon_mse(titok.load_tokenizer(None, weights=tmp_path / "ema.safetensors"))  # the exported EMA
    print(f"titok_tiny_vq after 800 steps: recon MSE {trained:.4f} (EMA {ema:.4f}); mean image {mean_image_mse:.4f}")
    assert trained < 0.5 * mean_image_mse
    assert ema < 0.6 * mean_image_mse  # the release's EMA warm-up lets the EMA follow within a few hundred steps


# ------------------------------------------------------------------------------------------- structured images
# Procedural 32 x 32 images with structure the mean image cannot solve and a few whole-image prototypes cannot
# cover: each 16 x 16 quadrant (one tiny-preset patch) holds one of 3 shapes in one of 4 colours on black, chosen
# independently, so there are 12^4 = 20,736 images. A tokenizer that codes the parts (8 tokens of 64 codes) can
# reconstruct images it never saw; the nearest of 64 whole-image prototypes (k-means on the training images,
# k = the codebook's size) gets roughly one quadrant in four right. Both are measured on held-out images.
COLOURS = torch.tensor([[1.0, 0.15, 0.1], [0.1, 0.9, 0.2], [0.2, 0.3, 1.0], [1.0, 0.9, 0.1]])


def _shapes() -> torch.Tensor:
    """(3, 16, 16) masks: a disk, a square, a horizontal bar."""
    yy, xx = torch.meshgrid(torch.arange(16.0) + 0.5, torch.arange(16.0) + 0.5, indexing="ij")
    disk = ((yy - 8) ** 2 + (xx - 8) ** 2 <= 5.5 ** 2).float()
    square = ((yy - 8).abs() <= 4.5).float() * ((xx - 8).abs() <= 4.5).float()
    bar = ((yy - 8).abs() <= 2).float() * ((xx - 8).abs() <= 6.5).float()
    return torch.stack([disk, square, bar])


def structured_images(n: int, seed: int) -> torch.Tensor:
    """(n, 3, 32, 32) in [0, 1]: every quadrant a shape x colour drawn independently."""
    g = torch.Generator().manual_seed(seed)
    shape, colour = torch.randint(0, 3, (n, 4), generator=g), torch.randint(0, 4, (n, 4), generator=g)
    masks = _shapes()
    x = torch.zeros(n, 3, 32, 32)
    for q in range(4):
        r, c = divmod(q, 2)
        x[:, :, 16 * r:16 * r + 16, 16 * c:16 * c + 16] = masks[shape[:, q]][:, None] * COLOURS[colour[:, q]][..., None,
                                                                                                              None]
    return x


def nearest_of_k_mse(train_x: torch.Tensor, test_x: torch.Tensor, k: int, iters: int = 20) -> float:
    """The best whole-image code book of size k the test can build: k-means (Lloyd) on the training images,
    started from k of them; the MSE of each held-out image to its nearest centre."""
    a, b = train_x.flatten(1), test_x.flatten(1)
    centres = a[torch.randperm(len(a), generator=torch.Generator().manual_seed(0))[:k]].clone()
    for _ in range(iters):
        assign = torch.cdist(a, centres).argmin(1)
        for j in range(k):
            if (assign == j).any():
                centres[j] = a[assign == j].mean(0)
    nearest = centres[torch.cdist(b, centres).argmin(1)]
    return float(((nearest - b) ** 2).mean())


def _save_pngs(x: torch.Tensor, folder) -> None:
    from PIL import Image

    folder.mkdir(parents=True)
    for i, img in enumerate((x * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()):
        Image.fromarray(img).save(folder / f"{i:04d}.png")


TOKENIZER_STEPS, GENERATOR_STEPS = 1000, 600


@pytest.fixture(scope="module")
def structured_run(tmp_path_factory):
    """A tiny VQ tokenizer trained on 384 structured images, and the baselines on 128 held-out ones."""
    root = tmp_path_factory.mktemp("structured")
    train_x, test_x = structured_images(384, 0), structured_images(128, 1)
    _save_pngs(train_x, root / "images")
    # The release's init (titok.tokenizer.release_init: std 0.02, codebook +-1/K) collapses the codebook of this
    # tiny, unnormalised VQ on this set at every learning rate tried (3e-4, 5e-4, 1e-3, 3e-3: reconstructions stay at
    # the mean image); the release's VQ tokenizers use l2-normalised codes. This test is about the objective, not
    # the init, so it starts from PyTorch's module defaults (model.init=torch; run.seed fixes the draw).
    config = apply_overrides(TrainConfig(), [
        "model.init=torch", f"run.out={root / 'tok'}", "run.threads=1", "run.image_every=0", "run.log_every=100",
        "run.ckpt_every=100000",
        "model.task=single_stage", "model.preset=titok_tiny_vq", f"data.source={root / 'images'}",
        "data.random_crop=false", "data.hflip=false", "optim.batch_size=16", "optim.lr=1e-3",
        f"schedule.steps={TOKENIZER_STEPS}", "schedule.warmup_steps=20", "loss.disc_start=-1", "optim.ema_decay=0"])
    model = train(config).model.eval()
    with torch.no_grad():
        recon = model.decode(model.encode(test_x)).clamp(0, 1)
    return {"root": root, "train_x": train_x, "test_x": test_x, "model": model,
            "mse": float(((recon - test_x) ** 2).mean()),
            "mean_image": float(((train_x.mean(0, keepdim=True) - test_x) ** 2).mean()),
            "nearest_of_k": nearest_of_k_mse(train_x, test_x, model.codebook_size)}


@pytest.mark.slow
def test_tokenizer_beats_the_mean_image_and_the_nearest_of_k_prototypes(structured_run):
    r = structured_run
    print(f"held-out recon MSE {r['mse']:.4f}; mean image {r['mean_image']:.4f}; "
          f"nearest of 64 k-means prototypes {r['nearest_of_k']:.4f}")
    assert r["nearest_of_k"] < 0.9 * r["mean_image"]  # the second baseline is a real one
    assert r["mse"] < 0.5 * r["nearest_of_k"]  # and the tokenizer beats it by a factor 2
    assert r["mse"] < 0.5 * r["mean_image"]


@pytest.mark.slow
def test_generator_beats_the_unigram_entropy_of_its_codes(structured_run, tmp_path):
    """A tiny generator trained on the tokenizer's codes predicts masked codes better than their unigram
    distribution does: its masked-token cross-entropy (half the positions masked) is below that entropy, and below
    the entropy of each position's codes (so it uses the unmasked codes, not only where a code sits)."""
    from safetensors.torch import load_file

    r = structured_run
    tokens = tmp_path / "tokens.safetensors"
    config = apply_overrides(TrainConfig(), [
        f"run.out={tmp_path / 'gen'}", "run.threads=1", "run.image_every=0", "run.log_every=100",
        "run.ckpt_every=100000", "model.task=generator", "model.preset=titok_tiny_bert",
        "model.tokenizer=titok_tiny_vq", f"model.tokenizer_weights={r['root'] / 'tok' / 'model.safetensors'}",
        f"data.source={r['root'] / 'images'}", f"data.tokens={tokens}", "data.hflip=false", "data.random_crop=false",
        "optim.batch_size=64", "optim.lr=3e-3", f"schedule.steps={GENERATOR_STEPS}", "schedule.warmup_steps=20",
        "optim.ema_decay=0", "loss.label_dropout=0"])
    gen = train(config).model.eval()
    codes = load_file(str(tokens))["tokens"].long()  # (384, 8): every training image's codes
    counts = torch.bincount(codes.flatten(), minlength=gen.codebook_size).double()
    p = counts[counts > 0] / counts.sum()
    unigram_entropy = float(-(p * p.log()).sum())
    g = torch.Generator().manual_seed(0)
    masks = torch.rand(codes.shape, generator=g) < 0.5
    masks[:, 0] |= ~masks.any(1)  # at least one masked position per row
    ids = torch.where(masks, torch.full_like(codes, gen.mask_token_id), codes)
    with torch.no_grad():
        logits = gen.logits(ids, torch.zeros(len(codes), dtype=torch.long)).double()  # (B, N, K)
    log_probs = logits.log_softmax(-1).gather(-1, codes[..., None])[..., 0]
    masked_ce = float(-(log_probs[masks]).mean())
    positional = 0.0  # the entropy of each position's own code distribution, averaged over positions
    for j in range(codes.shape[1]):
        c = torch.bincount(codes[:, j], minlength=gen.codebook_size).double()
        q = c[c > 0] / c.sum()
        positional += float(-(q * q.log()).sum()) / codes.shape[1]
    print(f"masked-token CE {masked_ce:.3f} nats; unigram entropy of the codes {unigram_entropy:.3f} nats; "
          f"per-position {positional:.3f}")
    assert unigram_entropy > 1.0  # the codes are many and used: beating their unigram is not trivial
    assert masked_ce < 0.65 * unigram_entropy  # measured 0.57
    # and it reads the other codes, not only the position: below each position's own code entropy (measured 0.83;
    # a generator whose head alone learns, on detached features, reaches 1.06)
    assert masked_ce < 0.9 * positional
