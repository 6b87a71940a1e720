"""The Inception-v3 feature extractor of FID and IS, found offline and checked before use.

We use torch-fidelity's port of the TF Inception graph (the one FID was defined with), with its weights file
`weights-inception-2015-12-05-6726825d.pth`. It is taken from, in order, an explicit path,
$TITOK_BENCH_INCEPTION_WEIGHTS, or the cache folder (`default_cache_dir()`, titok.fetch.cache_dir). It is
downloaded only when asked for: the path "released" fetches torch-fidelity's release asset into the cache through
the hash-checked download (never when offline). The file name's 8 hex digits are the prefix of its sha256 (the
torch.hub convention), which we check.

Tests and smoke runs use a *stand-in*: seeded random weights with the same keys, saved to a file and loaded
through the same path, with a sidecar `<file>.standin.json` saying so. Numbers computed with a stand-in are
labelled `standin_*` everywhere (bench/metrics/image_sets.py); they are never FID.
"""

from __future__ import annotations

import json
import math
import os
import zipfile
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

# sFID's features, as ADM's evaluator reads them (openai/guided-diffusion evaluations/evaluator.py):
# FID_SPATIAL_NAME = "mixed_6/conv:0", then `spatial[..., :7]` and a reshape of the NHWC tensor to (N, -1).
# Which layer of torch-fidelity's port that tensor is, decided from the TF graph (inception-2015-12-05,
# classify_image_graph_def.pb), not from other ports (they disagree):
# - The graph's inception blocks are named in order mixed, mixed_1, ..., mixed_10. mixed..mixed_2 work at 35x35
#   (torchvision-style Mixed_5b, 5c, 5d); mixed_3 is the reduction to 17x17 (Mixed_6a: its `conv` is a 3x3
#   stride-2 conv, beside a 3-conv tower and a pool); mixed_4, 5, 6, 7 are the four 17x17 blocks with 1x7/7x1 towers
#   (Mixed_6b, 6c, 6d, 6e: the third of them is mixed_6); mixed_8 reduces to 8x8 (Mixed_7a); mixed_9 and
#   mixed_10 are Mixed_7b and 7c. So the block named mixed_6 is Mixed_6d, not Mixed_6e.
# - Inside a block, `conv` is the 1x1 branch (the towers are `tower`, `tower_1`, `tower_2`): in the graph its
#   ops are mixed_6/conv/Conv2D, mixed_6/conv/batchnorm and the op named by the scope itself, mixed_6/conv, its
#   ReLU output. That is BasicConv2d's output (conv, batch norm, ReLU) of Mixed_6d.branch1x1, whose weights
#   torch-fidelity's converter takes from mixed_6/conv/conv2d_params and mixed_6/conv/batchnorm.
# - Shape check: an InceptionC 1x1 branch gives 192 channels on the 17x17 grid of a 299x299 input, so
#   mixed_6/conv:0 is (N, 17, 17, 192) in TF's NHWC; its first 7 channels are 17*17*7 = 2023 numbers per image,
#   flattened with the channel fastest (NHWC order), which is the order of ADM's stored mu_s/sigma_s.
SPATIAL_LAYER = "Mixed_6d.branch1x1"
SPATIAL_TF_TENSOR = "mixed_6/conv:0"
SPATIAL_CHANNELS, SPATIAL_GRID = 7, 17
SPATIAL_DIM = SPATIAL_CHANNELS * SPATIAL_GRID * SPATIAL_GRID  # 2023


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


def make_standin_inception_weights(path: str | Path, seed: int = 0, logit_scale: float = 8.0) -> Path:
    """Write seeded random Inception weights (torch-fidelity's keys and shapes) and mark them as a stand-in.

    `logit_scale` sets the spread of the 1008 logits (the fc weights' std times sqrt(2048)); the tests that pin
    the Inception Score to torch-fidelity's raise it so that the score is far from its trivial value 1.
    """
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
            sd[name] = torch.randn(t.shape, generator=g) * logit_scale * t.shape[1] ** -0.5
        else:  # He-scaled normal keeps the variance through ~40 conv+ReLU layers, so features stay informative
            sd[name] = torch.randn(t.shape, generator=g) * (2.0 / math.prod(t.shape[1:])) ** 0.5
    torch.save(sd, path)
    Path(str(path) + STANDIN_SUFFIX).write_text(json.dumps({"standin": True, "seed": seed, "logit_scale": logit_scale,
                                                           "sha256": sha256_of(path)}))
    return path


class SpatialTap:
    """sFID's features of each batch, taken by a forward hook on `SPATIAL_LAYER` during the same forward pass
    that gives the pool features and logits: (B, 7, 17, 17) -> NHWC -> (B, 2023). `take()` hands the last
    batch's features over once (None when the layer did not run)."""

    def __init__(self, extractor: nn.Module):
        self._value = None
        self._handle = extractor.get_submodule(SPATIAL_LAYER).register_forward_hook(self._hook)

    def _hook(self, module, inputs, output) -> None:
        first = output[:, :SPATIAL_CHANNELS]
        self._value = first.permute(0, 2, 3, 1).reshape(first.shape[0], -1).detach().clone()

    def take(self) -> torch.Tensor | None:
        value, self._value = self._value, None
        return value

    def remove(self) -> None:
        self._handle.remove()


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
    # torch-fidelity unpickles the file itself without weights_only; prove it holds only tensors first. A file in
    # torch's zip format is checked memory-mapped: its tensors are not copied, so the check costs neither a second
    # copy of the 95 MB in memory nor the time to make it (0.3 s of a 0.7 s load measured; bench/eval_throughput).
    try:
        torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except Exception as exc:
        raise WeightsError(f"{path}: refusing an Inception weights file that is not a plain tensor state dict: "
                         f"{exc}") from None
    extractor = fe.FeatureExtractorInceptionV3(FID_EXTRACTOR, list(FEATURES),
                                               feature_extractor_weights_path=str(path))
    return extractor.to(device).eval(), info
