"""What `titok-bench doctor` checks: the software stack, and a sample or reconstruction folder against the paper's
evaluation protocol, each finding saying what it does to FID.

The questions most asked of the TiTok release are why a user's FID differs from the paper's: fewer than 50k
samples (1d-tokenizer issue #65), reals prepared unlike the model input (#105: S-128 rFID 3.91 instead of 1.71),
other sampling settings (#11, #110). The paper's gFID protocol: 50,000 samples, 50 per ImageNet class, PNG (no
lossy step between the decoder and Inception), at the model's resolution, scored against ADM's reference batch
with the FID Inception. Each check here compares a folder with that protocol and reports what differs.

A folder is listed by name (cheap at 50,000 files); image headers are read for an evenly spread subset only
(`HEADER_SAMPLE` files), so the doctor answers in seconds on any folder size and memory stays flat.
"""

from __future__ import annotations

import os
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from bench.run.tasks.gen import MANIFEST, read_manifest
from titok.data.images import IMAGE_EXTENSIONS
from titok.data.prepare import ADM
from titok.errors import DataError

HEADER_SAMPLE = 64
LOSSY_FORMATS = ("JPEG", "WEBP")
INDEX_NAME = re.compile(r"^(\d+)\.png$")

# Why each check matters, with the source each claim rests on; printed with every finding of that check.
EFFECT = {
    "count": "FID is biased upward by a term proportional to 1/N (Chong & Forsyth, 'Effectively Unbiased FID and "
             "Inception Score and where to find them', CVPR 2020): with N samples that term is 50,000/N times the "
             "one in the paper's numbers, so FID over fewer samples reads higher, over more reads lower, and "
             "neither is comparable with the paper (the release's issue #65).",
    "class_balance": "the reference batch covers the 1000 classes evenly; a skewed class mix moves the sample "
                     "features' mean and covariance away from it, which FID counts as error, and lowers the "
                     "Inception Score's class-entropy term (the paper samples 50 per class).",
    "format": "lossy compression changes the Inception features: FID moves with JPEG quality alone (Parmar et al., "
              "'On Aliased Resizing and Surprising Subtleties in GAN Evaluation', CVPR 2022, clean-fid). The paper "
              "scores uint8 pixels as decoded (ADM's evaluator reads them from an .npz; this tool writes PNG).",
    "size": "Inception sees every image resized to 299x299; images at another size than the reference's carry "
            "other resampling artifacts and detail, so FID measures the size mismatch as well as the model.",
    "sampling": "gFID depends on the sampler: guidance scale, its schedule, temperature and step count trade FID "
                "against IS, and the paper's numbers hold only for the release's settings (the release's issues "
                "#11 and #110).",
    "weights": "samples of a model with random weights say nothing about the method; any FID over them is noise.",
    "reference": "FID compares two sets of Inception statistics; when the reference was made under another protocol "
                 "(extractor, image size, preparation of the real images) the number measures that difference "
                 "too (the release's issue #105: reals cropped unlike the model input gave rFID 3.91 for 1.71).",
}


@dataclass(frozen=True)
class Protocol:
    """The evaluation protocol a folder is checked against: the paper's by default."""

    num_samples: int = 50_000
    num_classes: int | None = None  # None: the generator preset's (1000 for every ImageNet model)


@dataclass
class Finding:
    check: str
    level: str  # "ok", "warn" (may bias the number; read why), "problem" (not the paper's protocol)
    message: str

    @property
    def effect(self) -> str:
        return EFFECT.get(self.check, "") if self.level != "ok" else ""


@dataclass
class FolderReport:
    path: Path
    findings: list[Finding] = field(default_factory=list)

    def add(self, check: str, level: str, message: str) -> None:
        self.findings.append(Finding(check, level, message))

    @property
    def problems(self) -> list[Finding]:
        return [f for f in self.findings if f.level == "problem"]


# ------------------------------------------------------------------------------------------------- folder
def list_images(folder: Path) -> list[Path]:
    """Image files under `folder` (recursively, as the FID commands read a folder), by name only."""
    found = []
    for root, dirs, files in os.walk(folder):  # names as strings: Path objects cost seconds at 50,000 files
        dirs.sort()
        found.extend(os.path.join(root, f) for f in sorted(files) if os.path.splitext(f)[1].lower() in IMAGE_EXTENSIONS)
    return [Path(f) for f in found]


def _spread(items: list, k: int) -> list:
    if len(items) <= k:
        return items
    return [items[round(i * (len(items) - 1) / (k - 1))] for i in range(k)]


def check_folder(folder: str | Path, protocol: Protocol = Protocol(), reference: str | Path | None = None,
                 inception_sha256: str | None = None) -> FolderReport:
    """Every check of a sample (or reconstruction) folder, and of its reference statistics when given."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: not a folder of images")
    report = FolderReport(folder)
    files = list_images(folder)
    if not files:
        raise DataError(f"{folder}: no image files ({', '.join(IMAGE_EXTENSIONS)})")
    manifest = read_manifest(folder)
    check_count(report, len(files), protocol)
    size = check_headers(report, files)
    expected_size = _model_size(manifest)
    if manifest is None:
        report.add("class_balance", "warn", f"labels unknown: no {MANIFEST} (a reconstruction folder, or samples "
                   "made elsewhere), so class balance cannot be checked")
    else:
        check_class_balance(report, files, manifest, protocol)
        check_sampling(report, manifest)
        check_weights(report, manifest)
    if expected_size is not None and size is not None and size != (expected_size, expected_size):
        report.add("size", "problem", f"images are {size[0]}x{size[1]}, the model ({manifest.get('tokenizer')}) "
                   f"makes {expected_size}x{expected_size}: resized after decoding?")
    if reference is not None:
        check_reference(report, reference, size, manifest is not None, inception_sha256)
    return report


def check_sample_npz(path: str | Path, protocol: Protocol = Protocol(), reference: str | Path | None = None,
                     inception_sha256: str | None = None) -> FolderReport:
    """The same checks on an ADM-format sample batch (`export-npz`, guided-diffusion): images `arr_0` (N, H, W, 3)
    uint8, labels `arr_1` where present. Only the header of `arr_0` is read, never its pixels."""
    from bench.metrics.reference import IMAGES_KEY, npy_header

    path = Path(path)
    report = FolderReport(path)
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
            if IMAGES_KEY + ".npy" not in names:
                raise DataError(f"{path}: no {IMAGES_KEY} (images): not an ADM-format sample batch")
            with z.open(IMAGES_KEY + ".npy") as f:
                shape, _, dtype = npy_header(f)
        labels = None
        if "arr_1.npy" in names:
            with np.load(path, allow_pickle=False) as npz:  # members load lazily: arr_0 is never read
                labels = npz["arr_1"]
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable .npz ({exc})") from None
    if len(shape) != 4 or shape[3] != 3:
        raise DataError(f"{path}: {IMAGES_KEY} has shape {shape}, expected (N, H, W, 3)")
    check_count(report, int(shape[0]), protocol)
    if np.dtype(dtype) == np.uint8:
        report.add("format", "ok", f"{IMAGES_KEY} uint8 (lossless pixels, as ADM's evaluator reads them)")
    else:
        report.add("format", "problem", f"{IMAGES_KEY} is {np.dtype(dtype)}, ADM's evaluator expects uint8 pixels")
    size = (int(shape[2]), int(shape[1]))
    report.add("size", "ok" if size[0] == size[1] else "warn", f"{size[0]}x{size[1]}")
    if labels is None:
        report.add("class_balance", "warn", "labels unknown: no arr_1 in the file, class balance not checked")
    elif len(labels) != shape[0]:
        report.add("class_balance", "problem", f"arr_1 holds {len(labels)} labels for {shape[0]} images")
    else:
        report_balance(report, labels, protocol.num_classes or 1000, protocol, "arr_1")
    if reference is not None:
        check_reference(report, reference, size, True, inception_sha256)
    return report


def check_count(report: FolderReport, count: int, protocol: Protocol) -> None:
    if count == protocol.num_samples:
        report.add("count", "ok", f"{count:,} images (protocol: {protocol.num_samples:,})")
        return
    ratio = protocol.num_samples / count
    report.add("count", "problem", f"{count:,} images; the protocol scores {protocol.num_samples:,} (the 1/N bias "
               f"term here is {ratio:.2f}x the protocol's)")


def check_headers(report: FolderReport, files: list[Path]) -> tuple[int, int] | None:
    """Formats by file name (all files) and by content, sizes and modes (an evenly spread subset of headers)."""
    by_suffix: dict[str, int] = {}
    for f in files:
        by_suffix[f.suffix.lower()] = by_suffix.get(f.suffix.lower(), 0) + 1
    sampled = _spread(files, HEADER_SAMPLE)
    formats, sizes, modes, unreadable = {}, {}, {}, []
    for f in sampled:
        try:
            with Image.open(f) as im:  # reads the header only
                formats[im.format] = formats.get(im.format, 0) + 1
                sizes[im.size] = sizes.get(im.size, 0) + 1
                modes[im.mode] = modes.get(im.mode, 0) + 1
        except (UnidentifiedImageError, OSError):
            unreadable.append(f.name)
    where = f"of {len(sampled)} headers read" if len(sampled) < len(files) else "of all headers"
    lossy_names = sum(n for s, n in by_suffix.items() if s in (".jpg", ".jpeg", ".webp"))
    lossy_content = sum(n for fmt, n in formats.items() if fmt in LOSSY_FORMATS)
    if lossy_names or lossy_content:
        report.add("format", "problem", f"lossy images: {lossy_names:,} of {len(files):,} files named .jpg/.jpeg/"
                   f".webp, {lossy_content} {where} JPEG/WebP; save samples as PNG")
    else:
        report.add("format", "ok", f"lossless ({', '.join(sorted(f for f in formats if f))} {where})")
    if unreadable:
        report.add("format", "problem", f"{len(unreadable)} {where} unreadable (first: {unreadable[0]}); the FID "
                   "commands skip such files, which shrinks N")
    if not sizes:
        return None
    if len(sizes) > 1:
        shown = ", ".join(f"{w}x{h} ({n})" for (w, h), n in sorted(sizes.items(), key=lambda kv: -kv[1]))
        report.add("size", "problem", f"mixed sizes {where}: {shown}")
        return None
    (w, h), = sizes
    if w != h:
        report.add("size", "warn", f"images are {w}x{h}, not square")
    else:
        report.add("size", "ok", f"{w}x{h} ({where})")
    if set(modes) - {"RGB"}:
        report.add("format", "warn", f"image modes {sorted(modes)} {where}: converted to RGB when read")
    return w, h


def _model_size(manifest: dict | None) -> int | None:
    """The image size the manifest's tokenizer makes, if it names a registered preset."""
    if not manifest or not isinstance(manifest.get("tokenizer"), str):
        return None
    from titok.registry import UnknownPresetError, get_spec

    try:
        return int(get_spec("tokenizer", manifest["tokenizer"]).config.image_size)
    except UnknownPresetError:
        return None


def sample_indices(files: list[Path]) -> np.ndarray | None:
    """Sample indices from generation's file names (`000123.png`), or None if any file is named otherwise."""
    idx = []
    for f in files:
        m = INDEX_NAME.match(f.name)
        if m is None:
            return None
        idx.append(int(m.group(1)))
    return np.asarray(idx, dtype=np.int64)


def check_class_balance(report: FolderReport, files: list[Path], manifest: dict, protocol: Protocol) -> None:
    from bench.run.tasks.gen import sample_classes

    idx = sample_indices(files)
    if idx is None:
        report.add("class_balance", "warn", f"files are not named by sample index (000123.png): labels in "
                   f"{MANIFEST} cannot be matched to them, class balance not checked")
        return
    labels = manifest.get("labels")
    classes = protocol.num_classes or _generator_classes(manifest)
    how = f"labels {labels[:5]}{'...' if len(labels) > 5 else ''} cycled" if labels else "class = index % classes"
    report_balance(report, sample_classes(idx, labels, classes), classes, protocol, how)


def report_balance(report: FolderReport, sample_class: np.ndarray, classes: int, protocol: Protocol,
                   how: str) -> None:
    """Balanced = every class within one sample of every other (a short count is the count check's finding)."""
    counts = np.bincount(np.asarray(sample_class, dtype=np.int64), minlength=classes)
    lo, hi = int(counts.min()), int(counts.max())
    if hi - lo <= 1:
        report.add("class_balance", "ok", f"{lo}{'' if lo == hi else f'-{hi}'} per class over {len(counts)} classes "
                   f"(protocol: {protocol.num_samples / classes:g})")
        return
    missing = int((counts == 0).sum())
    report.add("class_balance", "problem", f"uneven classes: {lo} to {hi} samples per class, {missing} of "
               f"{len(counts)} classes absent ({how}); the protocol: {protocol.num_samples / classes:g} each")


def _generator_classes(manifest: dict) -> int:
    from titok.registry import UnknownPresetError, get_spec

    try:
        return int(get_spec("generator", str(manifest.get("generator"))).config.num_classes)
    except UnknownPresetError:
        return 1000


def check_sampling(report: FolderReport, manifest: dict) -> None:
    """The manifest's sampling overrides against the generator preset's release defaults."""
    from titok.registry import UnknownPresetError, get_spec

    name = manifest.get("generator")
    try:
        spec = get_spec("generator", str(name))
    except UnknownPresetError:
        report.add("sampling", "warn", f"generator {name!r} is not a known preset: sampling settings not checked")
        return
    defaults = spec.config.sampling.to_dict()
    overrides = manifest.get("sampling") or {}
    diff = {k: (v, defaults.get(k)) for k, v in overrides.items() if defaults.get(k) != v}
    if spec.released_weights is None:
        report.add("sampling", "warn", f"{name} has no released checkpoint, hence no release sampling defaults: "
                   f"the preset's are assumed ({spec.notes or 'see titok/generators/presets.py'})")
    if diff:
        shown = "; ".join(f"{k} = {v!r} (release: {d!r})" for k, (v, d) in sorted(diff.items()))
        report.add("sampling", "problem", f"sampled with settings other than {name}'s release defaults: {shown}")
    elif spec.released_weights is not None:
        report.add("sampling", "ok", f"{name}'s release defaults ({_short(defaults)})")


def _short(settings: dict) -> str:
    keys = ("num_steps", "guidance_scale", "guidance_decay", "randomize_temperature")
    return ", ".join(f"{k}={settings[k]}" for k in keys if k in settings)


def check_weights(report: FolderReport, manifest: dict) -> None:
    weights = manifest.get("weights") or {}
    random = sorted(k for k, v in weights.items() if v == "random")
    if random:
        report.add("weights", "problem", f"{' and '.join(random)} ran with random weights (manifest: {weights})")
    elif weights:
        report.add("weights", "ok", ", ".join(f"{k} {v}" for k, v in sorted(weights.items())))
    else:
        report.add("weights", "warn", f"{MANIFEST} records no weights: whether the models were trained is unknown")


def check_reference(report: FolderReport, path: str | Path, size: tuple[int, int] | None, generated: bool,
                    inception_sha256: str | None) -> None:
    from bench.metrics.statistics_file import read_protocol

    info = read_protocol(path)  # checks keys, shapes and values first, with errors naming the file
    if not info:
        report.add("reference", "warn", f"{path} records no protocol (not made by `titok-bench stats`, not an ADM "
                   "reference batch): extractor, image size and preparation cannot be checked")
        return
    if info.get("format") == "adm-reference-batch":
        report.add("reference", "ok", f"ADM reference batch ({info['image_size']}x{info['image_size']}), the "
                   "paper's gFID reference")
    extractor = str(info.get("extractor", ""))
    if "standin" in extractor:
        report.add("reference", "problem", f"{path} was made with a stand-in Inception ({extractor}): numbers "
                   "against it are stand-in scores, not FID")
    if inception_sha256 and info.get("extractor_sha256") and info["extractor_sha256"] != inception_sha256:
        report.add("reference", "problem", f"{path} was made with other Inception weights (sha256 "
                   f"{info['extractor_sha256'][:12]}...) than those found here ({inception_sha256[:12]}...)")
    ref_size = info.get("image_size")
    if ref_size is not None and size is not None and size != (ref_size, ref_size):
        report.add("size", "problem", f"images are {size[0]}x{size[1]}, the reference statistics were made at "
                   f"{ref_size}x{ref_size}")
    prep = info.get("preparation")
    if prep is not None and prep != ADM:
        what = "gFID reference (ADM's batch)" if generated else "reference batch and rFID reals"
        report.add("reference", "warn", f"reference images prepared with {prep!r}; the paper's {what} use "
                   f"{ADM!r}")
    n = info.get("num_images")
    if info.get("format") != "adm-reference-batch" and isinstance(n, int) and n < 50_000:
        report.add("reference", "warn", f"reference statistics over {n:,} images: the covariance is estimated "
                   "from fewer images than the paper's 50,000, which adds its own 1/N bias")
    if not any(f.check == "reference" for f in report.findings):
        report.add("reference", "ok", f"{path}: made under {info.get('extractor')}, {ref_size}x{ref_size}, {prep}")
