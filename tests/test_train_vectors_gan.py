"""The discriminator, the GAN terms, the tokenizer losses (stage 1, stage 2, single stage) and the EMA decay against
vectors recorded from the TiTok release's own training code (../shared/parity/vectors-train), through the check
command's modules (titok.train.release_vectors.{gan,reconstruction,ema}): every recorded item must PASS within the
recording's tolerances. Skipped, with the reason, when ../shared is absent."""

from __future__ import annotations

import pytest

from tests.parity_paths import require_parity_dir
from titok.train.release_vectors import index_entries, run_all
from titok.train.release_vectors.__main__ import main

VECTORS = require_parity_dir() / "vectors-train"
FAST = ["discriminator_seed1.npz", "gan_losses.npz", "stage1_loss.npz", "ema_decay.json"]
THROUGH_NETWORKS = ["stage2_loss.npz", "single_stage_loss.npz"]  # ConvNeXt-S / LPIPS at full size


def _check(file: str) -> None:
    assert file in {e["file"] for e in index_entries(VECTORS)}, f"{file} is not in the recording's index.json"
    results = run_all(VECTORS, {file})
    failed = [r.line() for r in results if not r.ok]
    assert results and not failed, "\n".join(failed)
    return results


@pytest.mark.parametrize("file", FAST)
def test_recorded_items_pass(file):
    results = _check(file)
    if file == "discriminator_seed1.npz":  # the logits themselves were compared, not only the shapes
        assert {"logits_256", "logits_64"} <= {r.name for r in results}


@pytest.mark.slow
@pytest.mark.parametrize("file", THROUGH_NETWORKS)
def test_recorded_items_through_the_perceptual_networks_pass(file):
    """ConvNeXt-S and LPIPS with synthetic weights through our loaders (~20-40 s each on one core)."""
    results = _check(file)
    names = {r.name for r in results}
    if file == "stage2_loss.npz":
        assert {"perceptual_raw", "gen_at_start_total_loss", "disc_update1_ema_fake_after"} <= names
    else:
        assert {"vq_lpips_raw", "vae_gen_at_start_kl_loss", "vae_disc_at_start_lecam_loss"} <= names


def test_the_check_command_runs_on_the_folder(capsys):
    assert main(["--vectors", str(VECTORS), "--only", "gan_losses.npz,ema_decay.json"]) == 0
    out = capsys.readouterr().out
    assert "FAIL" not in out and "PASS gan_losses.npz disc_update1_lecam_loss" in out
