"""Two gloo processes give the statistics of one: FID, sFID, IS, KID, precision/recall and the FID bootstrap of
InceptionMetrics fed by rank (indices, reduce), a checkpoint taken mid-set on one rank, compute_image_metrics
over image folders (each rank reads its own batches; every rank returns rank 0's result), and recon's PSNR/SSIM
sums and code counts.

Expected values: the same computation in this (single) process, and the formulas written here (np.cov, the
frequency-weighted np.cov of the bootstrap, the Inception Score's split definition, k-NN balls in numpy,
torch-fidelity's KID on the features in order). The Frechet distance's matrix square root of 2048 x 2048 takes
tens of seconds on a loaded core, so the many-metrics run records the inputs of every Frechet distance (and
returns a cheap function of them) and the folder run computes one real FID on each side.
"""

from __future__ import annotations

import os
import socket

import numpy as np
import pytest
import torch

from tests.reference_scores import inception_score_by_definition, precision_recall_by_definition

NF, NR, B = 22, 12, 4  # fake set: 6 batches (the last of 2) -> ranks 0/1 read 3/3; real set: 3 batches -> 2/1
METRICS = ("fid", "sfid", "isc", "kid", "prc")
REPLICATES, KID_SUBSET = 3, 8

pytestmark = [pytest.mark.metrics, pytest.mark.usefixtures("one_torch_thread")]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _images():
    from titok.data.images import builtin_images

    return builtin_images("procedural", 64, NF, seed=1), builtin_images("skimage", 64, NR, seed=0)


def _mine(n: int, rank: int, world: int) -> list[range]:
    """Global batches j*B.. with j % world == rank, written out here (bench.metrics.distributed.rank_batches' rule)."""
    return [range(j * B, min(j * B + B, n)) for j in range(-(-n // B)) if j % world == rank]


def _recording_frechet(calls: list):
    def frechet(mu1, sigma1, mu2, sigma2):
        calls.append([np.array(a, np.float64) for a in (mu1, sigma1, mu2, sigma2)])
        return float(np.sum((mu1 - mu2) ** 2) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.sum(sigma1 * sigma2))

    return frechet


def _streamed(weights, rank: int, world: int, checkpoint_dir=None) -> dict:
    """InceptionMetrics fed this rank's batches with their positions; reduce; rank 0's result."""
    import bench.metrics.image_sets as bm

    calls: list = []
    bm.frechet_distance = _recording_frechet(calls)  # this process only (a spawned rank, or undone by the caller)
    fake, real = _images()

    def make():
        return bm.InceptionMetrics(METRICS, inception_weights=weights, num_fake=NF, kid_subset_size=KID_SUBSET,
                                   batch_size=B, bootstrap=REPLICATES)

    m = make()
    for k, b in enumerate(_mine(NF, rank, world)):
        if k == 1 and checkpoint_dir is not None:  # resume from a saved state part-way through the set
            np.savez(f"{checkpoint_dir}/state{rank}.npz", **m.state_dict())
            m = make()
            with np.load(f"{checkpoint_dir}/state{rank}.npz", allow_pickle=False) as z:
                m.load_state_dict(z)
        m.add_fake(fake[b.start:b.stop], b if world > 1 else None)
    for b in _mine(NR, rank, world):
        m.add_real(real[b.start:b.stop], b if world > 1 else None)
    m.reduce()
    got = {"fake_stats": m.fake_statistics(), "fake_spatial": m.fake_spatial_statistics()}
    if rank == 0:
        r = m.result()
        got.update(values=r.values, spreads=r.spreads, protocol=r.protocol, calls=calls)
    else:
        try:
            m.result()
        except bm.MetricError as exc:
            got["error"] = str(exc)
    return got


def _folders(weights, folders) -> dict:
    from bench.metrics.image_sets import compute_image_metrics
    from titok.data.images import ImageFolder

    r = compute_image_metrics(ImageFolder(folders[0]), ImageFolder(folders[1]), inception_weights=weights,
                              metrics=("fid", "isc"), batch_size=B, num_workers=0)
    return {"values": r.values, "protocol": r.protocol}


def _recon_sums(rank: int, world: int) -> dict:
    """PSNR/SSIM and code counts of this rank's batches (recon's sums), reduced."""
    from bench.metrics.streaming import CodebookUsage, RunningPixelMetrics

    real, recon, codes = _recon_inputs()
    pixels, usage = RunningPixelMetrics(("psnr", "ssim")), CodebookUsage(32)
    for b in _mine(NF, rank, world):
        pixels.update(recon[b.start:b.stop], real[b.start:b.stop])
        usage.update(codes[b.start:b.stop])
    pixels.reduce()
    usage.reduce()
    return {"n": pixels.n, "pixels": pixels.result(), "counts": usage.counts.numpy().copy(), "usage": usage.result()}


def _recon_inputs():
    real = _images()[0]
    g = torch.Generator().manual_seed(7)
    recon = (real.int() + torch.randint(-12, 13, real.shape, generator=g)).clamp(0, 255).to(torch.uint8)
    return real, recon, torch.randint(0, 20, (NF, 6), generator=g)  # 12 or more of 32 codes unused


def _rank(rank: int, port: int, out: str, weights: str, folders) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), OMP_NUM_THREADS="1", TITOK_BENCH_DIST_TIMEOUT_S="120")
    torch.set_num_threads(1)
    from bench.metrics import distributed

    ctx = distributed.start("cpu")
    try:
        got = {"folders": _folders(weights, folders), "recon": _recon_sums(rank, 2)}
        got["streamed"] = _streamed(weights, rank, 2, checkpoint_dir=out if rank == 1 else None)
        np.save(f"{out}/rank{rank}.npy", np.array([got], dtype=object), allow_pickle=True)
    finally:
        distributed.stop(ctx)


@pytest.mark.slow
def test_two_gloo_processes_equal_one_for_every_statistic(standin_inception, tmp_path, monkeypatch):
    """About a minute on a quiet machine: 4 Inception passes over 34 images and two FIDs of 2048-d statistics."""
    import torch.multiprocessing as mp
    from torch_fidelity.metric_kid import kid_features_to_metric

    import bench.metrics.image_sets as bm
    from tests.conftest import write_pngs

    fake, real = _images()
    folders = (tmp_path / "fake", tmp_path / "real")
    write_pngs(folders[0], fake)
    write_pngs(folders[1], real)
    mp.spawn(_rank, args=(_free_port(), str(tmp_path), str(standin_inception), folders), nprocs=2)
    ranks = [np.load(tmp_path / f"rank{r}.npy", allow_pickle=True)[0] for r in (0, 1)]

    # compute_image_metrics over folders: every rank returns rank 0's result, equal to one process's.
    one = _folders(standin_inception, folders)
    for got in ranks:
        assert got["folders"]["protocol"] == one["protocol"]  # counts, the real images' digest, everything
        assert got["folders"]["values"] == pytest.approx(one["values"], rel=1e-6)

    # recon's sums: PSNR (numpy), SSIM (scikit-image), code counts (numpy) of the whole set on every rank.
    from skimage.metrics import structural_similarity

    originals, recon, codes = _recon_inputs()
    mse = ((recon.double() - originals.double()) ** 2).flatten(1).mean(1).numpy()
    ssim = [structural_similarity(x.permute(1, 2, 0).numpy(), y.permute(1, 2, 0).numpy(), channel_axis=2,
                                  data_range=255, gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
            for x, y in zip(recon, originals, strict=True)]
    counts = np.bincount(codes.flatten().numpy(), minlength=32).astype(np.float64)
    one_recon = _recon_sums(0, 1)
    for got in [r["recon"] for r in ranks]:
        assert got["n"] == one_recon["n"] == NF
        np.testing.assert_array_equal(got["counts"], counts)
        assert got["usage"] == pytest.approx(one_recon["usage"], rel=1e-12)
        assert got["usage"]["codebook_usage"] == np.count_nonzero(counts) / 32
        assert got["pixels"] == pytest.approx(one_recon["pixels"], rel=1e-12)
        assert got["pixels"]["psnr"] == pytest.approx(float(np.mean(10 * np.log10(255.0**2 / mse))), rel=1e-12)
        assert got["pixels"]["ssim"] == pytest.approx(float(np.mean(ssim)), rel=1e-12)

    # InceptionMetrics fed by rank, with a checkpoint round trip on rank 1, against one process fed in order.
    monkeypatch.setattr(bm, "frechet_distance", bm.frechet_distance)  # _streamed replaces it; undone after
    single = _streamed(standin_inception, 0, 1)
    two = ranks[0]["streamed"]
    assert two["protocol"] == single["protocol"]
    assert set(two["values"]) == set(single["values"]) == {
        "standin_fid", "standin_sfid", "standin_isc_mean", "standin_isc_std", "standin_kid_mean", "standin_kid_std",
        "standin_precision", "standin_recall"}
    assert two["values"] == pytest.approx(single["values"], rel=1e-6)
    spread2, spread1 = two["spreads"]["standin_fid"], single["spreads"]["standin_fid"]
    assert spread2["n"] == spread1["n"] == REPLICATES and spread2["method"] == spread1["method"]
    assert (spread2["std"], spread2["mean"]) == pytest.approx((spread1["std"], spread1["mean"]), rel=1e-6)
    assert "rank 1" in ranks[1]["streamed"]["error"]
    assert len(two["calls"]) == len(single["calls"]) == 1 + REPLICATES + 1  # fid, its replicates, sfid
    for call2, call1 in zip(two["calls"], single["calls"], strict=True):
        for a2, a1 in zip(call2, call1, strict=True):
            np.testing.assert_allclose(a2, a1, rtol=1e-9, atol=1e-12)

    # ... and the formulas, from the features of the whole set in one pass (batches of B as above).
    from bench.metrics.inception import load_inception

    extractor, _ = load_inception(standin_inception)
    f = bm.extract_features(fake, extractor, batch_size=B, spatial=True)
    g = bm.extract_features(real, extractor, batch_size=B, spatial=True)
    for got in (two, ranks[1]["streamed"]):  # the reduced statistics are on every rank
        np.testing.assert_allclose(got["fake_stats"][0], f["pool"].mean(0), rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(got["fake_stats"][1], np.cov(f["pool"], rowvar=False), rtol=1e-8, atol=1e-12)
        np.testing.assert_allclose(got["fake_spatial"][1], np.cov(f["spatial"], rowvar=False), rtol=1e-8,
                                   atol=1e-12)
    fid_call, sfid_call = two["calls"][0], two["calls"][-1]
    np.testing.assert_allclose(fid_call[3], np.cov(g["pool"], rowvar=False), rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(sfid_call[2], g["spatial"].mean(0), rtol=1e-9, atol=1e-12)
    w_fake = bm_weights(NF)
    w_real = bm_weights(NR)
    for r, call in enumerate(two["calls"][1:1 + REPLICATES]):
        np.testing.assert_allclose(call[1], np.cov(f["pool"], rowvar=False, fweights=w_fake[r]), rtol=1e-8,
                                   atol=1e-12)
        np.testing.assert_allclose(call[2], (w_real[r] @ g["pool"]) / w_real[r].sum(), rtol=1e-9, atol=1e-12)
    isc = inception_score_by_definition(f["logits_unbiased"])
    assert (two["values"]["standin_isc_mean"], two["values"]["standin_isc_std"]) == pytest.approx(isc, rel=1e-9)
    kid = kid_features_to_metric(torch.from_numpy(f["pool"].astype(np.float32)).double(),
                                 torch.from_numpy(g["pool"].astype(np.float32)).double(), kid_subset_size=KID_SUBSET,
                                 kid_subsets=100, verbose=False, rng_seed=2020, kid_kernel="poly",
                                 kid_kernel_poly_degree=3, kid_kernel_poly_gamma=None, kid_kernel_poly_coef0=1)
    assert two["values"]["standin_kid_mean"] == pytest.approx(kid["kernel_inception_distance_mean"], rel=1e-6)
    assert two["values"]["standin_kid_std"] == pytest.approx(kid["kernel_inception_distance_std"], rel=1e-6)
    precision, recall = precision_recall_by_definition(f["pool"].astype(np.float32).astype(np.float64),
                                          g["pool"].astype(np.float32).astype(np.float64))
    assert (two["values"]["standin_precision"], two["values"]["standin_recall"]) == (precision, recall)
    assert 0 < precision < 1 or 0 < recall < 1  # a set where the balls decide something


def bm_weights(n: int) -> np.ndarray:
    """The bootstrap's Poisson(1) counts of images 0..n-1 (seed 0), as integer frequency weights for np.cov."""
    from bench.metrics.streaming import poisson1_weights

    return poisson1_weights(0, n, REPLICATES).astype(np.int64)
