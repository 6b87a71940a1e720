"""The Inception-v3 feature extractor of FID and IS, found offline and checked before use.

We use torch-fidelity's port of the TF Inception graph (the one FID was defined with), with its weights file
`weights-inception-2015-12-05-6726825d.pth`. It is taken from, in order, an explicit path,
$TITOK_BENCH_INCEPTION_WEIGHTS, or the cache folder (`default_cache_dir()`, titok.fetch.cache_dir). It is
downloaded only when asked for: the path "released" fetches torch-fidelity's release asset into the cache through
the hash-checked download (never when offline). The file name's 8 hex digits are the prefix of its sha256 (the
torch.hub convention), which we check.

Tests and smoke runs use a *stand-in*: seeded random weights with the same keys, saved to a file and loaded
through the same path, with a sidecar `<file>.standin.json` saying so. Numbers computed with a stand-in are
labelled `standin_*` everywhere (bench/metrics.py); they are never FID.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from titok.errors import MissingDependencyError, MissingFileError
from titok.fetch import UrlFile, cache_dir, fetch, sha256_of
from titok.released import RELEASED
from titok.weights import WeightsError

ENV_VAR = "TITOK_BENCH_INCEPTION_WEIGHTS"
INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_SHA256_PREFIX = "6726825d"
INCEPTION_URL = "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/" + INCEPTION_FILE
STANDIN_SUFFIX = ".standin.json"
FID_EXTRACTOR = "inception-v3-compat"  # torch-fidelity's port of the TF FID Inception graph, as it names it
FEATURES = ("2048", "logits_unbiased")  # pool features (FID, KID, PRC) and logits (IS)


class MissingArtifactError(MissingFileError):
    """An external file the run needs is not on this machine; the message says where to get and put it."""


def require_torch_fidelity():
    try:
        import torch_fidelity  # noqa: F401
    except ImportError as exc:
        raise MissingDependencyError(
            "metrics need torch-fidelity and clean-fid: install the metrics stack "
            "(pip install -r requirements/metrics.txt -e '.[metrics]', or use tox -e metrics / tox -e bench)"
        ) from exc
    import torch_fidelity.feature_extractor_inceptionv3 as fe

    return fe


INCEPTION_SOURCE = UrlFile(INCEPTION_URL, sha256=INCEPTION_SHA256_PREFIX)


def default_cache_dir() -> Path:
    """$TITOK_CACHE, else $XDG_CACHE_HOME/titok-bench, else ~/.cache/titok-bench: where released files land."""
    return cache_dir()


def resolve_inception_weights(path: str | Path | None = None) -> Path:
    """The Inception weights file: `path`, the environment's, the cache's; "released" fetches it if missing."""
    if str(path) == RELEASED:
        return fetch(INCEPTION_SOURCE)
    candidates = [Path(path).expanduser()] if path else []
    if os.environ.get(ENV_VAR):
        candidates.append(Path(os.environ[ENV_VAR]).expanduser())
    candidates.append(default_cache_dir() / INCEPTION_FILE)
    if path and not candidates[0].is_file():
        raise MissingArtifactError(f"Inception weights not found at {candidates[0]}")
    for c in candidates:
        if c.is_file():
            return c
    raise MissingArtifactError(
        f"Inception weights {INCEPTION_FILE} not found (looked in: {', '.join(map(str, candidates))}). "
        f"Download it on a connected machine from {INCEPTION_URL} and either pass --inception-weights PATH, "
        f"set {ENV_VAR}=PATH, or put it in {default_cache_dir()}/; or pass --inception-weights released to "
        f"download it into that folder now (hash-checked)."
    )


def _inception_skeleton(fe) -> nn.Module:
    """torch-fidelity's Inception layers under their attribute names, without loading any weights."""
    m = nn.Module()
    m.Conv2d_1a_3x3 = fe.BasicConv2d(3, 32, kernel_size=3, stride=2)
    m.Conv2d_2a_3x3 = fe.BasicConv2d(32, 32, kernel_size=3)
    m.Conv2d_2b_3x3 = fe.BasicConv2d(32, 64, kernel_size=3, padding=1)
    m.Conv2d_3b_1x1 = fe.BasicConv2d(64, 80, kernel_size=1)
    m.Conv2d_4a_3x3 = fe.BasicConv2d(80, 192, kernel_size=3)
    m.Mixed_5b, m.Mixed_5c, m.Mixed_5d = fe.InceptionA(192, 32), fe.InceptionA(256, 64), fe.InceptionA(288, 64)
    m.Mixed_6a = fe.InceptionB(288)
    m.Mixed_6b, m.Mixed_6c = fe.InceptionC(768, channels_7x7=128), fe.InceptionC(768, channels_7x7=160)
    m.Mixed_6d, m.Mixed_6e = fe.InceptionC(768, channels_7x7=160), fe.InceptionC(768, channels_7x7=192)
    m.Mixed_7a, m.Mixed_7b, m.Mixed_7c = fe.InceptionD(768), fe.InceptionE_1(1280), fe.InceptionE_2(2048)
    m.fc = nn.Linear(2048, 1008)
    return m


def make_standin_inception_weights(path: str | Path, seed: int = 0) -> Path:
    """Write seeded random Inception weights (torch-fidelity's keys and shapes) and mark them as a stand-in."""
    fe = require_torch_fidelity()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for name, t in _inception_skeleton(fe).state_dict().items():
        if name.endswith("running_var"):
            sd[name] = torch.ones_like(t)
        elif name.endswith(("running_mean", "num_batches_tracked")) or (t.ndim == 1 and name.endswith("bias")):
            sd[name] = torch.zeros_like(t)
        elif t.ndim == 1:  # batch-norm scales
            sd[name] = torch.ones_like(t)
        elif name == "fc.weight":  # logits spread enough that the Inception Score is not trivially 1
            sd[name] = torch.randn(t.shape, generator=g) * 8.0 * t.shape[1] ** -0.5
        else:  # He-scaled normal keeps the variance through ~40 conv+ReLU layers, so features stay informative
            sd[name] = torch.randn(t.shape, generator=g) * (2.0 / math.prod(t.shape[1:])) ** 0.5
    torch.save(sd, path)
    Path(str(path) + STANDIN_SUFFIX).write_text(json.dumps({"standin": True, "seed": seed, "sha256": sha256_of(path)}))
    return path


@dataclass(frozen=True)
class ExtractorInfo:
    name: str
    weights_path: str
    weights_sha256: str
    standin: bool

    def as_protocol(self) -> dict:
        return {"name": self.name, "weights_sha256": self.weights_sha256, "standin": self.standin}


def inspect_weights(path: Path) -> ExtractorInfo:
    """Check a weights file: the real one by its sha256 prefix, a stand-in by its sidecar; else an error."""
    digest = sha256_of(path)
    sidecar = Path(str(path) + STANDIN_SUFFIX)
    if digest.startswith(INCEPTION_SHA256_PREFIX):
        return ExtractorInfo(FID_EXTRACTOR, str(path), digest, standin=False)
    if sidecar.is_file() and json.loads(sidecar.read_text()).get("sha256") == digest:
        return ExtractorInfo("inception-v3-compat-standin", str(path), digest, standin=True)
    raise WeightsError(
        f"{path} is not {INCEPTION_FILE}: its sha256 {digest[:16]}... does not start with {INCEPTION_SHA256_PREFIX} "
        f"(and it is not a stand-in written by make_standin_inception_weights)"
    )


def load_inception(weights: str | Path | None, device: str | torch.device = "cpu"):
    """(torch-fidelity FeatureExtractorInceptionV3, ExtractorInfo) for the resolved, checked weights file."""
    fe = require_torch_fidelity()
    path = resolve_inception_weights(weights)
    info = inspect_weights(path)
    # torch-fidelity unpickles the file itself without weights_only; prove it holds only tensors first.
    try:
        torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsError(f"{path}: refusing an Inception weights file that is not a plain tensor state dict: "
                         f"{exc}") from None
    extractor = fe.FeatureExtractorInceptionV3(FID_EXTRACTOR, list(FEATURES),
                                               feature_extractor_weights_path=str(path))
    return extractor.to(device).eval(), info
