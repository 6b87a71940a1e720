"""A small, hand-built set of result records for the table and plot tests: speed at two option settings and
two batch sizes, single-call and warmed-up timings, real and stand-in FIDs, an error record.

The numbers are invented inputs for rendering tests (records are data to a table); no test checks them as results.
"""

from __future__ import annotations

import dataclasses

from bench.records.store import make_record
from bench.run.env import environment
from titok.inference import DEFAULT, InferenceOptions

ENV = environment("cpu")


def _options(kind: str) -> dict:
    return dataclasses.asdict(InferenceOptions.reference() if kind == "reference" else DEFAULT)


def speed(model, op, ips, *, batch=8, options="default", iters=3, warmup=1, resolution=256, metrics=None,
          error=None):
    m = {} if error else {"images_per_sec": ips, "sec_per_batch": batch / ips, "peak_memory_mb": 1000.0,
                          "params_m": 100.0, **(metrics or {})}
    return make_record(run_id="r1", model=model, task="speed", commit="c", env=ENV, metrics=m, error=error,
                       protocol={"op": op, "batch_size": batch, "batch_size_used": batch, "precision": "fp32",
                                 "resolution": resolution, "iters": iters, "warmup": warmup,
                                 "options": _options(options)})


def recon(model, rfid=None, standin=None, n=50_000):
    metrics = {"psnr": 21.5, "ssim": 0.61234}
    metrics.update({"rfid": rfid} if rfid is not None else {})
    metrics.update({"standin_rfid": standin} if standin is not None else {})
    return make_record(run_id="r1", model=model, task="recon", commit="c", env=ENV, metrics=metrics,
                       protocol={"data": "imagenet-val", "resolution": 256, "num_images": n})


def gen(model, gfid, isc, n=50_000, resolution=256):
    return make_record(run_id="r1", model=model, task="gen", commit="c", env=ENV,
                       metrics={"gfid": gfid, "isc_mean": isc},
                       protocol={"num_samples": n, "resolution": resolution})


def records() -> list[dict]:
    """TiTok-L-32 and B-64 measured with gFID, S-128 with a stand-in distance only, MaskGIT with throughput only."""
    return [
        speed("titok_l32", "generate", 0.25, options="reference"),
        speed("titok_l32", "generate", 0.30),
        speed("titok_l32", "generate", 0.2, batch=1),  # a smaller batch: the tables quote the largest
        speed("titok_l32", "decode", 0.41),
        speed("titok_l32", "decode", 0.35, options="reference"),
        speed("titok_b64", "generate", 0.26, metrics={"iterations": {"n": 5, "min": 30.0, "median": 30.7,
                                                                     "max": 31.9}}),
        speed("titok_s128", "generate", 0.0126, batch=1, iters=1, warmup=0),
        speed("titok_s128", "sample", 0.00343, batch=1, iters=1, warmup=0),
        speed("maskgit_256", "generate", 0.148),
        speed("titok_l64_512", "generate", 0.0747, resolution=512),
        speed("titok_l32", "generate", None, options="reference", error="not supported: bf16 on CPU"),
        recon("titok_l32", rfid=2.3456),
        recon("titok_b64", rfid=1.9),
        recon("titok_s128", standin=12.108),
        recon("taming_vqgan_f16_1024", rfid=8.1),
        gen("titok_l32", 3.1, 190.04),
        gen("titok_b64", 2.9, 201.5),
        gen("titok_l64_512", 3.2, 170.0, resolution=512),
    ]
