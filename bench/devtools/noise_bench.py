"""Noise + pick per sampling step, side by side in one run (issue 23): the default `counter-icdf-v1` (one counter
uniform per token, inverse CDF), `counter-hash-v1` (a counter uniform per token and code, Gumbel-max) and the
TiTok release's way (torch's `uniform_` over (B, N, K), Gumbel-max; bytedance/1d-tokenizer modeling/maskgit.py,
`ImageBert.generate`), each drawing the token at an annealed temperature and the (B, N) confidence noise.

Also the sampler's own cost per step outside the network (`sample_tokens` with a stand-in network returning a
stored logits table, guidance on), against the TiTok-L-32 generator's forward pass at the same batch, so the share
of a step spent outside the forward pass is on record.

The schemes run round-robin (one call of each per round) so that drift in the machine's load hits all alike; each
figure is the median over rounds, with the fastest beside it. Minor page faults (`getrusage` ru_minflt) are read
before and after each timed call: a fresh (B, N, K) tensor costs one fault per 4 KiB page the first time it is
written, which is most of the kernel time of a path that allocates one per step.

    python -m bench.devtools.noise_bench --out results/noise-pick-TAG.md   (TAG: bench.run.env.env_tag of the machine)
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

from bench.run.env import env_tag, environment
from bench.run.machine import machine_state
from titok.generators.config import SamplingConfig
from titok.generators.noise import confidence_noise, seed_tensor
from titok.generators.sampler import _gumbel, _inverse_cdf_pick, _noisy_argmax, _Scratch, choice_noise, sample_tokens

STEP, TEMPERATURE = 1, 4.75  # the choice temperature of step 4 of 8 at randomize_temperature 9.5


def _faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def release_way(logits: torch.Tensor, confidence: torch.Tensor, temperature: float) -> tuple[torch.Tensor, ...]:
    """What the release's loop does per step (its `add_gumbel_noise` on the logits, then on the confidence)."""
    def gumbel(t):
        noise = torch.zeros_like(t).uniform_(0, 1)
        return -torch.log((-torch.log(noise.clamp(min=1e-20))).clamp(min=1e-20))
    codes = (logits + temperature * gumbel(logits)).argmax(dim=-1)
    return codes, confidence + temperature * gumbel(confidence)


def schemes(b: int, n: int, k: int) -> dict:
    """name -> a no-argument call doing one step's noise and pick on fixed logits (B, N, K)."""
    logits = torch.randn(b, n, k, generator=torch.Generator().manual_seed(0)) * 2
    confidence = torch.randn(b, n, generator=torch.Generator().manual_seed(1))
    seeds = seed_tensor(range(b), "cpu")
    scratch = _Scratch()  # kept across calls, as sample_tokens keeps it across steps

    def icdf():
        codes, _ = _inverse_cdf_pick(logits, seeds, STEP, TEMPERATURE, scratch)
        return codes, confidence + choice_noise(seeds, STEP, n, TEMPERATURE)

    def hash_():
        codes = _noisy_argmax(logits, seeds, STEP, TEMPERATURE)
        return codes, confidence + TEMPERATURE * _gumbel(confidence_noise(seeds, STEP, n))

    return {"counter-icdf-v1": icdf, "counter-hash-v1": hash_,
            "release (uniform_ + Gumbel-max)": lambda: release_way(logits, confidence, TEMPERATURE)}


class TableNetwork(nn.Module):
    """A stand-in network: returns a stored logits table (rows as asked), so a sampling step times the rest."""

    has_null_class = True

    def __init__(self, rows: int, n: int, k: int):
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(()))
        self.table = torch.randn(rows, n, k, generator=torch.Generator().manual_seed(2)) * 2
        self.num_tokens, self.codebook_size, self.mask_token_id = n, k, k

    def logits(self, ids, labels, unconditional=False):
        return self.table[: ids.shape[0]]


def run_side_by_side(calls: dict, rounds: int) -> dict:
    for fn in calls.values():  # warm-up: first-touch of kept buffers, allocator caches
        fn()
    out = {name: {"sec": [], "faults": []} for name in calls}
    for _ in range(rounds):
        for name, fn in calls.items():
            f0, t0 = _faults(), time.perf_counter()
            fn()
            t1, f1 = time.perf_counter(), _faults()
            out[name]["sec"].append(t1 - t0)
            out[name]["faults"].append(f1 - f0)
    return {name: {"median_ms": 1e3 * statistics.median(r["sec"]), "min_ms": 1e3 * min(r["sec"]),
                   "faults_per_call": statistics.median(r["faults"]), "rounds": rounds} for name, r in out.items()}


def sampler_overhead(b: int, n: int, k: int, rounds: int) -> dict:
    """Milliseconds per step of `sample_tokens` outside the network: 2 steps, constant guidance (the 2B-row
    table), reported as the call's time / 2. Step 0 draws noise; step 1 (temperature 0) takes the argmax, as every
    sampling call's last step does, so this is the mean of a noisy and a noiseless step."""
    model = TableNetwork(2 * b, n, k)
    labels = torch.zeros(b, dtype=torch.long)
    calls = {scheme: (lambda scheme=scheme: sample_tokens(model, labels, SamplingConfig(
        num_steps=2, randomize_temperature=9.5, guidance_scale=4.5, guidance_decay="constant",
        noise_scheme=scheme), seeds=list(range(b)))) for scheme in ("counter-icdf-v1", "counter-hash-v1")}
    res = run_side_by_side(calls, rounds)
    return {name: {**r, "median_ms_per_step": r["median_ms"] / 2} for name, r in res.items()}


def forward_ms(b: int, rows_timed: int, rounds: int) -> dict:
    """TiTok-L-32's generator forward (random weights) at `rows_timed` rows, scaled to the 2B rows of a guided
    step at batch `b` (the forward's work is linear in rows at this size)."""
    import titok

    gen = titok.load_generator("titok_l32").eval()
    ids = torch.full((rows_timed, gen.num_tokens), gen.mask_token_id)
    labels = torch.zeros(rows_timed, dtype=torch.long)
    with torch.no_grad():
        gen.logits(ids, labels)
        secs = []
        for _ in range(rounds):
            t0 = time.perf_counter()
            gen.logits(ids, labels)
            secs.append(time.perf_counter() - t0)
    ms = 1e3 * statistics.median(secs)
    return {"rows_timed": rows_timed, "median_ms": ms, "scaled_ms_at_2B": ms * 2 * b / rows_timed}


def _markdown(res: dict, command: str) -> str:
    lines = [f"# Noise + pick per sampling step ({res['env_tag']})", "", f"Command: `{command}`", "",
             f"Machine state: {json.dumps(res['machine'])}", "",
             "| B | N | K | scheme | median ms/step | fastest ms | minor page faults/call | vs counter-hash-v1 "
             "| vs release |", "|---|---|---|---|---|---|---|---|---|"]
    for case in res["noise_pick"]:
        rows = case["results"]
        hash_ms, rel_ms = rows["counter-hash-v1"]["median_ms"], rows["release (uniform_ + Gumbel-max)"]["median_ms"]
        for name, r in rows.items():
            lines.append(f"| {case['B']} | {case['N']} | {case['K']} | {name} | {r['median_ms']:.1f} | "
                         f"{r['min_ms']:.1f} | {r['faults_per_call']:.0f} | {r['median_ms'] / hash_ms:.3f} | "
                         f"{r['median_ms'] / rel_ms:.3f} |")
    if res.get("sampler"):
        s = res["sampler"]
        lines += ["", f"## `sample_tokens` outside the network, B={s['B']} N={s['N']} K={s['K']}, guided "
                  "(stand-in network returning a stored table)", "",
                  "| scheme | median ms/step | minor page faults/call (2 steps) | share of a step outside the "
                  "L-32 forward |", "|---|---|---|---|"]
        fwd = s["forward"]["scaled_ms_at_2B"]
        for name, r in s["results"].items():
            share = r["median_ms_per_step"] / (r["median_ms_per_step"] + fwd)
            lines.append(f"| {name} | {r['median_ms_per_step']:.1f} | {r['faults_per_call']:.0f} | "
                         f"{100 * share:.1f}% |")
        lines += ["", f"TiTok-L-32 generator forward: {s['forward']['median_ms']:.0f} ms at "
                  f"{s['forward']['rows_timed']} rows, scaled to {2 * s['B']} rows (guided, batch {s['B']}): "
                  f"{fwd:.0f} ms."]
    pages = res["noise_pick"][0]["B"] * res["noise_pick"][0]["N"] * res["noise_pick"][0]["K"] * 4 // 4096
    lines += ["", "Notes: absolute times move with the machine's load (its state before and after is in the raw "
              "results); the ratios compare calls made round-robin in one process. A fresh (B, N, K) float32 "
              f"tensor at the first K costs {pages} minor page faults; the sampler's per-call count is the guidance "
              "temporary of each step plus the two buffers it keeps across the steps of one call.",
              "", "Raw results:", "", "```json", json.dumps(res, indent=1), "```", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--tokens", type=int, default=32)
    p.add_argument("--codes", type=int, nargs="+", default=[4096, 8192])
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--sampler", action="store_true", help="also time sample_tokens and the L-32 forward")
    p.add_argument("--forward-rows", type=int, default=32)
    p.add_argument("--out", type=Path, help="write a markdown report here (the command goes in it)")
    a = p.parse_args(argv)
    res = {"env_tag": env_tag(environment("cpu")), "env": environment("cpu"), "machine": machine_state(),
           "step": STEP, "temperature": TEMPERATURE, "noise_pick": []}
    for k in a.codes:
        r = run_side_by_side(schemes(a.batch, a.tokens, k), a.rounds)
        res["noise_pick"].append({"B": a.batch, "N": a.tokens, "K": k, "results": r})
        print(json.dumps(res["noise_pick"][-1]), flush=True)
    if a.sampler:
        k = a.codes[0]
        res["sampler"] = {"B": a.batch, "N": a.tokens, "K": k,
                          "results": sampler_overhead(a.batch, a.tokens, k, max(3, a.rounds // 2)),
                          "forward": forward_ms(a.batch, a.forward_rows, 3)}
        print(json.dumps(res["sampler"]), flush=True)
    res["machine_after"] = machine_state()
    if a.out:
        command = "python -m bench.devtools.noise_bench " + " ".join(argv if argv is not None else sys.argv[1:])
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(_markdown(res, command))
    return 0


if __name__ == "__main__":
    sys.exit(main())
