"""ADM-format image batches (`.npz` with `arr_0` uint8 (N,H,W,3)) as an image source for the harness.

Why: the gFID numbers of the TiTok paper come from OpenAI's ADM evaluator (guided-diffusion
`evaluations/evaluator.py`), whose inputs are `.npz` files holding images in `arr_0`: the reference batch
`VIRTUAL_imagenet256_labeled.npz` (`arr_0` plus precomputed `mu`, `sigma`, `mu_s`, `sigma_s`) and sample files
such as those `titok-bench export-npz` writes. Reading them as a data set lets the harness score exactly the
pixels ADM's evaluator sees, without a detour through PNG folders.

Why not `np.load`: `np.load(path)["arr_0"]` reads the whole member into memory (10,000 images at 256 px are
2 GB; 50,000 samples at 512 px are 39 GB), and `mmap_mode` is ignored for the members of an `.npz`. So
`NpzImages` finds where the member's `.npy` data starts and reads one image per item:

- stored members (`np.savez`, and `export-npz`): the zip local header gives the member's offset, the `.npy`
  header (versions 1.0 and 2.0, what numpy writes) the array's; item i is one positioned read of H*W*3 bytes.
  Random access is O(1) and memory is one image.
- deflated members (`np.savez_compressed`): there is no offset to seek to, so items are read through a
  decompressing stream that only moves forward; reading in order (what `iter_image_batches` does, also per
  DataLoader worker) costs one pass, going back restarts the stream. Accepted rather than refused because
  ADM's evaluator streams such files too, so any file it takes is a file we take.

File handles are opened lazily per process (never pickled into DataLoader workers, never shared across a
fork, where a shared file offset would mix up reads).
"""

from __future__ import annotations

import logging
import os
import struct
import threading
import zipfile
from pathlib import Path

import numpy as np
import torch

from titok.data.prepare import AS_IS
from titok.errors import DataError, MissingFileError

log = logging.getLogger(__name__)

IMAGES_KEY = "arr_0"  # where ADM's evaluator reads images (reference batches and sample files alike)
# Labels, where a file has them: "label" by name, or "arr_1", the second positional array of
# guided-diffusion's scripts/image_sample.py (`np.savez(out_path, arr, label_arr)`) and of `export-npz`.
LABEL_KEYS = ("label", "arr_1")
AS_STORED = AS_IS  # `.preparation`: the pixels are used exactly as the file holds them ("none", as everywhere)
_LOCAL_HEADER = struct.Struct("<4s5H3L2H")  # zip local file header: signature ... name length, extra length
_LOCAL_SIGNATURE = b"PK\x03\x04"


def npy_header(f) -> tuple[tuple[int, ...], bool, np.dtype]:
    """Read a `.npy` header from `f` (positioned at its magic): (shape, fortran_order, dtype)."""
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(f)
    if version == (2, 0):
        return np.lib.format.read_array_header_2_0(f)
    raise ValueError(f".npy format version {version[0]}.{version[1]} (numpy writes 1.0 or 2.0 for image arrays)")


def _member_data_start(f, info: zipfile.ZipInfo) -> int:
    """Absolute file offset of a stored zip member's first byte, from its local header (not the central
    directory's copy: the local extra field, e.g. zip64 sizes, may differ in length)."""
    f.seek(info.header_offset)
    raw = f.read(_LOCAL_HEADER.size)
    if len(raw) != _LOCAL_HEADER.size:
        raise ValueError("truncated zip local header")
    fields = _LOCAL_HEADER.unpack(raw)
    if fields[0] != _LOCAL_SIGNATURE:
        raise ValueError("bad zip local header signature")
    name_len, extra_len = fields[-2], fields[-1]
    return info.header_offset + _LOCAL_HEADER.size + name_len + extra_len


class NpzImages(torch.utils.data.Dataset):
    """Images of an ADM-format `.npz` -> (uint8 (3,H,W) tensor, label), one image read per item.

    `key` names the uint8 (N,H,W,3) array (default "arr_0", ADM's). The label comes from a "label" or "arr_1"
    member holding N integers, else it is 0. Attributes as the harness's other image sets have them: `skipped`
    (always empty: an array has no unreadable files) and `preparation` ("none": as stored); plus `shape` (N,H,W,3),
    `labels` (an int64 array, or None) and `compressed` (whether items come from a forward-only stream).
    """

    def __init__(self, path, key: str = IMAGES_KEY):
        self.path = Path(path).expanduser()
        self.key = key
        if not self.path.is_file():
            raise MissingFileError(f"image batch not found: {self.path}")
        member = f"{key}.npy"
        try:
            with zipfile.ZipFile(self.path) as zf:
                names = zf.namelist()
                if member not in names:
                    keys = ", ".join(n.removesuffix(".npy") for n in names) or "none"
                    hint = (" (a statistics-only file: usable as an FID reference, not as images)"
                            if {"mu.npy", "sigma.npy"} <= set(names) else "")
                    raise DataError(f"{self.path}: no {key!r} array in this .npz (it has: {keys}){hint}")
                info = zf.getinfo(member)
                if info.flag_bits & 0x1:
                    raise DataError(f"{self.path}: the {key!r} member is encrypted")
                self.compressed = info.compress_type != zipfile.ZIP_STORED
                with zf.open(member) as stream:
                    shape, fortran, dtype = npy_header(stream)
                    header_len = stream.tell()  # the array's bytes start here, counted within the member
        except DataError:
            raise
        except zipfile.BadZipFile as exc:
            raise DataError(f"{self.path}: not an .npz file (a zip archive as np.savez writes): {exc}") from None
        except ValueError as exc:  # numpy's header parser and ours: a damaged or non-numpy member
            raise DataError(f"{self.path}: unreadable {key!r} array: {exc}") from None
        if dtype != np.uint8 or len(shape) != 4 or shape[3] != 3 or fortran:
            raise DataError(f"{self.path}: {key!r} must be uint8 images (N, H, W, 3) in C order, as ADM's evaluator "
                            f"reads them; got {dtype} {tuple(shape)}{' in Fortran order' if fortran else ''}")
        self.shape: tuple[int, int, int, int] = tuple(int(s) for s in shape)
        self._row = self.shape[1] * self.shape[2] * 3
        if info.file_size != header_len + self.shape[0] * self._row:
            raise DataError(f"{self.path}: the {key!r} member holds {info.file_size} bytes, not the "
                            f"{header_len + self.shape[0] * self._row} its header promises (damaged or truncated)")
        if self.compressed:
            self._data_start = header_len  # an offset within the decompressed member stream
        else:
            with open(self.path, "rb") as f:
                try:
                    self._data_start = _member_data_start(f, info) + header_len
                except ValueError as exc:
                    raise DataError(f"{self.path}: damaged zip archive: {exc}") from None
            end = self._data_start + self.shape[0] * self._row
            if os.path.getsize(self.path) < end:
                raise DataError(f"{self.path}: truncated: {key!r} needs {end} bytes, the file has "
                                f"{os.path.getsize(self.path)}")
        self.labels = self._read_labels()
        self.skipped: list[str] = []
        self.preparation = AS_STORED
        self._handle = None  # (zip file or None, stream), opened on first read by the process in _owner
        self._owner = os.getpid()
        self._lock = threading.Lock()  # threads of one process share the handle's position

    def _read_labels(self) -> np.ndarray | None:
        """N integers from "label" or "arr_1", if the file has them (a few hundred kB, read whole)."""
        n = self.shape[0]
        with np.load(self.path, allow_pickle=False) as npz:  # NpzFile reads only the members asked for
            for name in LABEL_KEYS:
                if name == self.key or name not in npz.files:
                    continue
                try:
                    labels = npz[name]
                except ValueError as exc:  # e.g. an object array, which needs pickle
                    if name == "label":
                        raise DataError(f"{self.path}: unreadable 'label' array: {exc}") from None
                    continue
                if labels.shape == (n,) and np.issubdtype(labels.dtype, np.integer):
                    return labels.astype(np.int64)
                if name == "label":  # named as labels, so a wrong shape is a broken file
                    raise DataError(f"{self.path}: 'label' must hold {n} integers, got {labels.dtype} "
                                    f"{labels.shape}")
                # a positional arr_1 may be anything: not labels then
                log.info("%s: arr_1 is %s %s, not %d labels; labels are 0", self.path, labels.dtype, labels.shape, n)
        return None

    def __len__(self) -> int:
        return self.shape[0]

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state.update(_handle=None, _lock=None)  # handles and locks stay in the process that made them
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._owner, self._lock = os.getpid(), threading.Lock()

    def _stream(self):
        """This process's handle (call holding `_lock`): a raw file (stored) or the member's decompressing stream."""
        if self._handle is None:
            if self.compressed:
                zf = zipfile.ZipFile(self.path)
                self._handle = (zf, zf.open(f"{self.key}.npy"))
            else:
                self._handle = (None, open(self.path, "rb", buffering=0))
        return self._handle[1]

    def read(self, i: int) -> tuple[torch.Tensor, int]:
        """The i-th image (uint8 (3,H,W), as stored) and its label; touches no bookkeeping (safe in workers)."""
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"index {i} out of range for {n} images")
        i %= n
        buf = np.empty(self._row, dtype=np.uint8)
        if self._owner != os.getpid():
            # A forked DataLoader worker: the parent's handle shares its file position with the parent, and the
            # parent's lock may have been held at the fork. Start afresh (a new worker has one thread).
            self._owner, self._lock, self._handle = os.getpid(), threading.Lock(), None
        with self._lock:
            f = self._stream()
            f.seek(self._data_start + i * self._row)  # deflated: forward reads on, backward restarts the stream
            view, got = memoryview(buf), 0
            while got < self._row:  # a raw read may return less than asked; 0 is the end of the file
                step = f.readinto(view[got:])
                if not step:
                    break
                got += step
        if got != self._row:
            raise DataError(f"{self.path}: image {i} cut short ({got} of {self._row} bytes); the file changed "
                            "or is damaged")
        image = torch.from_numpy(buf.reshape(self.shape[1], self.shape[2], 3)).permute(2, 0, 1)
        return image, int(self.labels[i]) if self.labels is not None else 0

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.read(i)

    def close(self) -> None:
        """Close this process's handle (reopened on the next read)."""
        if self._handle is not None and self._owner == os.getpid():
            for h in reversed(self._handle):
                if h is not None:
                    h.close()
        self._handle = None

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter shutdown: nothing left to release
            pass
