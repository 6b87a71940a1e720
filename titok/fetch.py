"""Released files on demand: fetched once into a cache, checked, and never fetched when offline.

Nothing is downloaded unless asked for (`weights="released"`, `--weights released`, `--inception-weights
released`). Two kinds of source:
  * a file in a Hugging Face hub repository (`HubFile`): fetched through `huggingface_hub`, into its own cache
    (`$HF_HUB_CACHE`, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`), so a file the TiTok release's
    `from_pretrained` already fetched on this machine is found and not fetched again;
  * a plain URL (`UrlFile`: GitHub release assets, torch-fidelity's Inception weights): streamed into a
    temporary file beside its destination, its sha256 computed on the way, and renamed into place only when
    the byte count and the hash match. A mismatch or a cut connection leaves nothing in the cache, and a
    partial file is never read: only the rename makes a file visible under its final name.
Offline (`HF_HUB_OFFLINE=1`, which `--offline` sets) never opens a connection: a file not in the cache is one
error saying which file to put where. Our own cache folder (`cache_dir()`: `$TITOK_CACHE`, else
`$XDG_CACHE_HOME/titok-bench`, else `~/.cache/titok-bench`) holds URL files under their names, and hub files a
user copied by hand under `hub/<repo>/<file>`.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import socket
import sys
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from titok.errors import InputError, MissingFileError

log = logging.getLogger(__name__)
CACHE_ENV = "TITOK_CACHE"
OFFLINE_ENV = "HF_HUB_OFFLINE"  # the ecosystem's switch (huggingface_hub, transformers, timm); --offline sets it
_TRUE = ("1", "true", "yes", "on")
CHUNK = 1 << 20
HUB_ENDPOINT = "https://huggingface.co"  # huggingface_hub's default when HF_ENDPOINT is unset
_reachable_hosts: dict[tuple[str, int], bool] = {}  # asked once per process: (host, port) -> a connection opened


class DownloadError(InputError, OSError):
    """A download that failed or delivered the wrong bytes; nothing was cached. The message says what to do."""


@dataclass(frozen=True)
class HubFile:
    """A file in a model repository on the Hugging Face hub; the first of `filenames` the repository holds."""

    repo_id: str
    filenames: tuple[str, ...]
    revision: str = "main"
    sha256: str | None = None  # full digest or a prefix of at least 8 hex digits

    def describe(self) -> str:
        return f"hub repo {self.repo_id} ({' or '.join(self.filenames)}, revision {self.revision})"


@dataclass(frozen=True)
class UrlFile:
    """A file at a plain URL, stored in the cache under `filename` (default: the URL's last component)."""

    url: str
    sha256: str | None = None  # full digest or a prefix of at least 8 hex digits (torch.hub's file-name convention)
    filename: str = ""

    @property
    def name(self) -> str:
        return self.filename or self.url.rstrip("/").rsplit("/", 1)[-1]

    def describe(self) -> str:
        return self.url


Source = HubFile | UrlFile


# ------------------------------------------------------------------------------------------ where files live
def cache_dir() -> Path:
    """Our cache folder, read from the environment at each call (so a test or a shell can redirect it)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "titok-bench"


def hf_cache_dir() -> Path:
    """huggingface_hub's cache folder, resolved as it resolves it, but at call time rather than at its import."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "huggingface" / "hub"


def is_offline() -> bool:
    return os.environ.get(OFFLINE_ENV, "").strip().lower() in _TRUE


def manual_path(source: Source, filename: str | None = None) -> Path:
    """Where a user who fetched the file by hand puts it so that offline runs find it."""
    if isinstance(source, UrlFile):
        return cache_dir() / source.name
    return cache_dir() / "hub" / source.repo_id / (filename or source.filenames[0])


def reachable(url: str, timeout: float = 3.0) -> bool:
    """Whether one TCP connection to `url`'s host (or to the proxy that would carry it) opens; asked once per host.

    Why: huggingface_hub meets an unreachable hub with five retries and back-off, about 25 s of warnings (each
    printed twice, by its retry loop and by its logger) before the clear message. A machine without network
    answers this one connection at once (no DNS, no route, refused) or within `timeout`, and the answer holds for
    the rest of the process, so a suite with twelve released files waits once, not twelve times.
    """
    parts = urllib.parse.urlsplit(url)
    proxy = urllib.request.getproxies().get(parts.scheme)
    if proxy and parts.hostname and not urllib.request.proxy_bypass(parts.hostname):
        parts = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
    key = (parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80))
    if key not in _reachable_hosts:
        try:
            socket.create_connection(key, timeout=timeout).close()
            _reachable_hosts[key] = True
        except OSError as exc:
            _reachable_hosts[key] = False
            log.warning("no connection to %s:%d (%s): released files are read from the caches only", *key, exc)
    return _reachable_hosts[key]


# ------------------------------------------------------------------------------------------------ checking
def sha256_of(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MB chunks (checkpoints are GBs). The one file hasher: downloads, the
    Inception weights, weights tags of records, the tokenizer file a generator was trained on, perceptual nets."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def _hash_matches(digest: str, expected: str | None) -> bool:
    return expected is None or digest.startswith(expected.lower())


def _check_cached(path: Path, source: Source) -> Path:
    """A file found in a cache must be the published one where its hash is known (a copy by hand may not be)."""
    if source.sha256 is not None:
        digest = sha256_of(path)
        if not _hash_matches(digest, source.sha256):
            raise DownloadError(f"{path} is not the file published at {source.describe()}: sha256 {digest[:16]}... "
                                f"expected {source.sha256}... Delete it, then fetch again or put the right file there.")
    return path


# ------------------------------------------------------------------------------------------------- fetching
def fetch(source: Source, offline: bool | None = None) -> Path:
    """The local path of `source`: from a cache, else downloaded and checked (never when offline)."""
    offline = is_offline() if offline is None else offline
    if isinstance(source, UrlFile):
        return _fetch_url(source, offline)
    return _fetch_hub(source, offline)


def _fetch_url(source: UrlFile, offline: bool) -> Path:
    dest = manual_path(source)
    if dest.is_file():
        return _check_cached(dest, source)
    if offline:
        raise MissingFileError(
            f"offline ({OFFLINE_ENV}=1 or --offline), and {source.name} is not in the cache. On a machine with "
            f"network, download {source.url}" + (f" (sha256 starts {source.sha256})" if source.sha256 else "")
            + f" and put it at {dest}, or pass its path instead of 'released'.")
    return download_verified(source.url, dest, source.sha256)


def download_verified(url: str, dest: Path, sha256: str | None = None, timeout: float = 60.0) -> Path:
    """Stream `url` into a temporary file beside `dest`; rename it to `dest` only if complete and hash-checked."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.part")  # per process: concurrent fetches never share one
    log.warning("downloading %s -> %s", url, dest)  # a warning: a first use may fetch GBs, say so by default
    try:
        h, got, expected = hashlib.sha256(), 0, None
        with urllib.request.urlopen(url, timeout=timeout) as response, open(tmp, "wb") as out:
            length = response.headers.get("Content-Length")
            expected = int(length) if length and length.isdigit() else None
            bar = tqdm(total=expected, unit="B", unit_scale=True, desc=dest.name, disable=not sys.stderr.isatty())
            with bar:
                for chunk in iter(lambda: response.read(CHUNK), b""):
                    out.write(chunk)
                    h.update(chunk)
                    got += len(chunk)
                    bar.update(len(chunk))
            out.flush()
            os.fsync(out.fileno())
        if expected is not None and got != expected:
            raise DownloadError(f"download of {url} stopped after {got} of {expected} bytes; nothing was cached. "
                                "Run again to retry.")
        digest = h.hexdigest()
        if not _hash_matches(digest, sha256):
            raise DownloadError(f"{url}: sha256 {digest[:16]}... does not match the published {sha256}...; the file "
                                "was not cached. A proxy or mirror may have altered it: fetch it from the URL by hand "
                                f"on another machine, check its hash, and put it at {dest}.")
        os.replace(tmp, dest)
    except (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError) as exc:
        # Network failures only (URLError covers HTTP error statuses); a bug of ours keeps its traceback.
        raise DownloadError(f"download of {url} failed ({exc}); nothing was cached. Retry, or download it on "
                            f"another machine and put it at {dest}.") from None
    finally:
        tmp.unlink(missing_ok=True)
    log.info("fetched %s (sha256 %s) into %s", url, digest, dest)
    return dest


def _fetch_hub(source: HubFile, offline: bool) -> Path:
    for name in source.filenames:  # copied by hand into our cache: used as it is
        if manual_path(source, name).is_file():
            return _check_cached(manual_path(source, name), source)
    try:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, LocalEntryNotFoundError
    except ImportError as exc:
        from titok.errors import MissingDependencyError

        raise MissingDependencyError("fetching hub files needs huggingface_hub: pip install huggingface_hub") from exc
    endpoint = os.environ.get("HF_ENDPOINT") or None  # read now: huggingface_hub reads it once, at its import
    unreachable = None
    if not offline and not reachable(endpoint or HUB_ENDPOINT):  # fail fast: no retries against a dead network
        unreachable = f"no connection to {urllib.parse.urlsplit(endpoint or HUB_ENDPOINT).netloc}"
    local_only = offline or unreachable is not None
    for name in source.filenames:
        try:
            path = hf_hub_download(source.repo_id, name, revision=source.revision, cache_dir=hf_cache_dir(),
                                   endpoint=endpoint, local_files_only=local_only)
            return _check_cached(Path(path), source)
        except LocalEntryNotFoundError as exc:  # offline, or the hub unreachable, and not in the cache
            if local_only:  # the next name may be in the cache
                continue
            unreachable = exc  # reachable a moment ago, then not: huggingface_hub already retried
            break
        except EntryNotFoundError:  # the repository does not hold this name: try the next one
            continue
        except HfHubHTTPError as exc:
            raise DownloadError(f"{source.describe()}: the hub refused the request ({exc}). Nothing was cached."
                                ) from None
    where = manual_path(source)
    if offline or unreachable is not None:
        why = f"offline ({OFFLINE_ENV}=1 or --offline)" if offline else f"the hub is unreachable ({unreachable})"
        raise MissingFileError(
            f"{why}, and {source.describe()} is not in the cache ({hf_cache_dir()}). On a machine with network, "
            f"download https://huggingface.co/{source.repo_id}/resolve/{source.revision}/{source.filenames[0]} and "
            f"put it at {where}, or pass its path instead of 'released'.")
    raise DownloadError(f"{source.describe()}: none of the file names exists in the repository; it may have "
                        "been reorganised. Download the checkpoint by hand and pass its path.")
