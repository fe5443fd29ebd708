"""The model file: safetensors tensors plus JSON metadata, never pickles.

One file holds everything `impute` needs: the network weights, and for each contig the
panel's sites (positions, alleles, cM, frequencies), its haplotypes (compact: rare sites as
lists of carriers, the others in blocks of distinct sequences), the
window layout and each window's cached inducing points. Loading parses tensors and JSON
only; no code from the file is run.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from spinimpute import __version__
from spinimpute.errors import ModelFileError
from spinimpute.io import compact_panel
from spinimpute.io.atomic import atomic_output
from spinimpute.io.compact_panel import CompactHaplotypes
from spinimpute.model.config import EVIDENCE_FEATURES, FEED_FORWARD, SITE_FEATURES, ModelConfig
from spinimpute.panel import ReferenceContig, Sites, Strings, Window

FORMAT_NAME = "spinimpute-model"
# 3: the network reads the copying model's evidence (config.EVIDENCE_FEATURES); 2: the haplotypes compact
# (spinimpute.io.compact_panel); 1 stored them bit-packed.
FORMAT_VERSION = 3
METADATA_KEY = "spinimpute"


class FileRows:
    """Rows of a tensor in a file (a model file, or the panel spilled while reading it), read a
    range of rows at a time.

    Reading only the rows a group of windows needs keeps memory flat in the length of the
    contig. Plain reads rather than a memory map, whose pages once touched would count in the
    process's memory.
    """

    def __init__(self, path: Path, offset: int, shape: tuple[int, ...], dtype=np.uint8):
        self.path, self.offset, self.shape, self.dtype = path, offset, tuple(shape), np.dtype(dtype)
        self.row_bytes = int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize

    def __len__(self) -> int:
        return self.shape[0]

    def _read(self, start: int, stop: int) -> np.ndarray:
        size = (stop - start) * self.row_bytes
        with open(self.path, "rb") as handle:
            handle.seek(self.offset + start * self.row_bytes)
            data = handle.read(size)
        if len(data) != size:
            raise ModelFileError(self.path, "truncated model file (haplotypes)")
        return np.frombuffer(data, dtype=self.dtype).reshape((stop - start, *self.shape[1:]))

    def __getitem__(self, index) -> np.ndarray:
        """Rows of a slice (step 1) or of an array of row indices."""
        if isinstance(index, slice):
            start, stop, step = index.indices(self.shape[0])
            if step != 1:
                raise IndexError("FileRows slices have step 1")
            return self._read(start, max(start, stop))
        index = np.asarray(index, dtype=np.int64)
        if index.size == 0:
            return np.zeros((0, *self.shape[1:]), dtype=self.dtype)
        lo, hi = int(index.min()), int(index.max()) + 1
        return self._read(lo, hi)[index - lo]

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        rows = self._read(0, self.shape[0])
        return rows if dtype is None else rows.astype(dtype)


def _tensor_offsets(path: Path) -> tuple[int, dict]:
    """Start of the data section and the header of a safetensors file (JSON only)."""
    with open(path, "rb") as handle:
        (size,) = struct.unpack("<Q", handle.read(8))
        header = json.loads(handle.read(size))
    return 8 + size, header


@dataclass
class ModelBundle:
    """A model file's contents.

    Attributes:
        weights: the network's state dict as float32 arrays (`SpinImputer.state_dict()`).
        config: the network's hyperparameters.
        contigs: the panel, per contig.
        metadata: provenance and training summary.
    """

    weights: dict[str, np.ndarray]
    config: ModelConfig
    contigs: dict[str, ReferenceContig]
    metadata: dict


def _strings_to_array(values) -> np.ndarray:
    """Newline-ended UTF-8 bytes of the strings."""
    return np.ascontiguousarray((values if isinstance(values, Strings) else Strings.of(values)).lines())


def _array_to_strings(t: np.ndarray, n: int) -> Strings:
    values = Strings.from_lines(t)
    values.lines().tobytes().decode()  # UTF-8, or UnicodeDecodeError now rather than when a site is written
    if len(values) != n:
        raise ValueError("string table length mismatch")
    return values


# safetensors' names of the dtypes a model file holds.
_SAFETENSORS_DTYPES = {np.dtype(np.uint8): "U8", np.dtype(np.int8): "I8", np.dtype(np.uint16): "U16",
                       np.dtype(np.uint32): "U32", np.dtype(np.int32): "I32",
                       np.dtype(np.int64): "I64", np.dtype(np.float32): "F32", np.dtype(np.float64): "F64",
                       np.dtype(np.bool_): "BOOL"}

def write_safetensors(path, tensors: dict, metadata: dict[str, str]) -> None:
    """Write a safetensors file: an 8-byte header length, the JSON header padded to 8 bytes, the
    tensors' bytes (the format's layout, written here without the library's copy of every tensor)."""
    header: dict = {"__metadata__": metadata}
    offset = 0
    for name, t in tensors.items():
        dtype = t.dtype
        nbytes = int(np.prod(t.shape, dtype=np.int64)) * dtype.itemsize
        header[name] = {"dtype": _SAFETENSORS_DTYPES[dtype], "shape": list(t.shape), "data_offsets": [offset,
                                                                                                      offset + nbytes]}
        offset += nbytes
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as handle:
        handle.write(struct.pack("<Q", len(text)) + text)
        for t in tensors.values():
            handle.write(np.ascontiguousarray(t).tobytes())


def save_model(path, bundle: ModelBundle, *, threads: int = 1) -> None:
    """Write the model atomically (`atomic_output`: temporary name, then rename), encoding the
    panel's haplotypes compactly (`spinimpute.io.compact_panel`) where they are not already."""
    tensors: dict = {f"network.{k}": np.array(v, order="C") for k, v in bundle.weights.items()}  # keeps 0-d shapes
    contig_meta = []
    for i, (name, c) in enumerate(bundle.contigs.items()):
        p = f"contig{i}."
        # asarray, not astype: a chromosome's columns are not copied to be written
        tensors[p + "positions"] = np.asarray(c.sites.positions, dtype=np.int64)
        tensors[p + "cm"] = np.asarray(c.cm, dtype=np.float64)
        haplotypes = c.packed_haplotypes
        if not isinstance(haplotypes, CompactHaplotypes):
            haplotypes = compact_panel.encode(haplotypes, c.n_haplotypes, threads=threads)
        tensors.update({p + k: v for k, v in haplotypes.tensors().items()})
        tensors[p + "alt_freq"] = np.asarray(c.alt_freq, dtype=np.float32)
        tensors[p + "windows"] = np.array([[w.start, w.stop, w.core_start, w.core_stop] for w in c.windows],
                                          dtype=np.int64).reshape(-1, 4)
        tensors[p + "ids"] = _strings_to_array(c.sites.ids)
        tensors[p + "refs"] = _strings_to_array(c.sites.refs)
        tensors[p + "alts"] = _strings_to_array(c.sites.alts)
        if c.inducing is None:
            raise ValueError(f"contig {name} has no encoded inducing points")
        tensors[p + "inducing"] = np.ascontiguousarray(c.inducing, dtype=np.float32)
        contig_meta.append({"name": name, "n_sites": len(c.sites), "n_haplotypes": c.n_haplotypes})
    metadata = dict(bundle.metadata)
    metadata.update(
        {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "spinimpute_version": __version__,
            "hyperparameters": bundle.config.hyperparameters(),
            "contigs": contig_meta,
        }
    )
    with atomic_output(path, index=False) as tmp:
        write_safetensors(tmp, tensors, {METADATA_KEY: json.dumps(metadata)})


_NUMPY_DTYPES = {name: dtype for dtype, name in _SAFETENSORS_DTYPES.items()}


def _file_rows(path: Path, data_start: int, entry: dict) -> FileRows:
    """A tensor of the file, left there to be read a range of rows at a time."""
    begin, end = entry["data_offsets"]
    rows = FileRows(path, data_start + begin, tuple(entry["shape"]), _NUMPY_DTYPES[entry["dtype"]])
    if end - begin != rows.shape[0] * rows.row_bytes:
        raise ValueError("tensor size disagrees with its shape")
    return rows


def _compact_haplotypes(path: Path, data_start: int, header: dict, tensors: dict, prefix: str,
                        n_haplotypes: int, threads: int) -> CompactHaplotypes:
    arrays = {k: tensors[prefix + k] for k in ("site_code", "carrier_count", "block_start", "block_sequences")}
    arrays.update({k: _file_rows(path, data_start, header[prefix + k]) for k in compact_panel.LARGE_TENSORS})
    return CompactHaplotypes.from_tensors(n_haplotypes, arrays, threads=threads, source=str(path))


def load_model(path, *, threads: int = 1) -> ModelBundle:
    """Read a model file, checking its format and version. The panel's haplotypes stay in the file
    and are read as imputation asks for them, decoded on `threads` threads."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.exists():
        raise ModelFileError(path, "file not found")
    if path.is_dir():
        raise ModelFileError(path, "is a directory, not a spinimpute model file")
    with open(path, "rb") as handle:
        start = handle.read(16)
    if start.startswith((b"\x1f\x8b", b"##fileformat", b"BCF")):
        raise ModelFileError(
            path, f"is a VCF/BCF, not a spinimpute model; make one with 'spinimpute train --ref {path} --out MODEL'"
        )
    try:
        with safe_open(str(path), framework="numpy") as handle:
            raw = (handle.metadata() or {}).get(METADATA_KEY)
            if raw is None:
                raise ModelFileError(path, "not a spinimpute model (no spinimpute metadata)")
            metadata = json.loads(raw)
            if metadata.get("format") != FORMAT_NAME:
                raise ModelFileError(path, "not a spinimpute model")
            version = metadata.get("format_version")
            if version != FORMAT_VERSION:
                raise ModelFileError(
                    path,
                    f"model format version {version} is not supported by spinimpute {__version__} "
                    f"(expects {FORMAT_VERSION}); re-run 'spinimpute train' on the panel with this version",
                )
            # The haplotypes' large arrays are read later, per group of windows (FileRows).
            tensors = {k: handle.get_tensor(k) for k in handle.keys()  # noqa: SIM118 - not a dict
                       if k.rsplit(".", 1)[-1] not in compact_panel.LARGE_TENSORS}
            data_start, header = _tensor_offsets(path)
    except ModelFileError:
        raise
    except (SafetensorError, OSError, ValueError, json.JSONDecodeError) as exc:
        raise ModelFileError(path, f"corrupt or truncated model file ({exc})") from None
    except Exception as exc:  # noqa: BLE001 - safetensors raises other types on some malformed headers
        raise ModelFileError(path, f"corrupt or truncated model file ({exc})") from None
    try:
        config = ModelConfig.from_hyperparameters(metadata["hyperparameters"])
        weights = {k[len("network.") :]: v for k, v in tensors.items() if k.startswith("network.")}
        _check_weights(weights, config)
        contigs = {}
        for i, meta in enumerate(metadata["contigs"]):
            p = f"contig{i}."
            n = meta["n_sites"]
            sites = Sites(
                meta["name"],
                tensors[p + "positions"],
                _array_to_strings(tensors[p + "ids"], n),
                _array_to_strings(tensors[p + "refs"], n),
                _array_to_strings(tensors[p + "alts"], n),
            )
            windows = [Window(*map(int, row)) for row in tensors[p + "windows"].tolist()]
            contigs[meta["name"]] = ReferenceContig(
                sites=sites,
                cm=tensors[p + "cm"],
                packed_haplotypes=_compact_haplotypes(path, data_start, header, tensors, p,
                                                      int(meta["n_haplotypes"]), threads),
                n_haplotypes=int(meta["n_haplotypes"]),
                alt_freq=tensors[p + "alt_freq"],
                windows=windows,
                inducing=tensors[p + "inducing"],
            )
            if len(sites.positions) != n or contigs[meta["name"]].packed_haplotypes.shape[0] != n:
                raise ValueError("site arrays disagree")
    except (KeyError, TypeError, ValueError, RuntimeError, UnicodeDecodeError) as exc:
        raise ModelFileError(path, f"inconsistent model file ({exc})") from None
    return ModelBundle(weights, config, contigs, metadata)


# Weights that imputation reads, with the width of their last dimension as a function of the hyperparameters.
_INFERENCE_WEIGHTS = {
    "log_ne": None, "logit_mismatch": None, "word_embedding.weight": "embed_dim", "head.weight": "embed_dim",
    "hmm_projection.weight": "copying*kmer", "site_projection.weight": "features*kmer", "predictor.to_q.weight": "embed_dim",
    **{f"predictor.{layer}.weight": None for layer in FEED_FORWARD},
}


def _check_weights(weights: dict[str, np.ndarray], config: ModelConfig) -> None:
    """The weights imputation needs are there and fit the hyperparameters (what loading into
    the torch module would check); ValueError if not."""
    sizes = {"embed_dim": config.embed_dim, "copying*kmer": (2 + EVIDENCE_FEATURES) * config.kmer,
             "features*kmer": SITE_FEATURES * config.kmer}
    for name, width in _INFERENCE_WEIGHTS.items():
        if name not in weights:
            raise ValueError(f"missing weight {name}")
        if width is not None and weights[name].shape[-1] != sizes[width]:
            raise ValueError(f"weight {name} has shape {weights[name].shape}")


# --------------------------------------------------------------------------- network weights

WEIGHTS_FORMAT = "spinimpute-network"
# 2: the network reads the copying model's evidence (config.EVIDENCE_FEATURES); 1 its probabilities alone.
WEIGHTS_VERSION = 2
# The network pretrained on simulated panels (`spinimpute.training.pretrain`), shipped with the package.
PRETRAINED_WEIGHTS = Path(__file__).resolve().parents[1] / "model" / "pretrained.safetensors"


@dataclass
class NetworkWeights:
    """A network's weights apart from any panel: what `train` starts from.

    Attributes:
        weights: the state dict as float32 arrays.
        config: the hyperparameters.
        sha256: checksum of the file they were read from, which model files record.
        metadata: how they were made (the pretraining's settings and evidence).
    """

    weights: dict[str, np.ndarray]
    config: ModelConfig
    sha256: str
    metadata: dict


def save_weights(path, weights: dict[str, np.ndarray], config: ModelConfig, metadata: dict) -> None:
    """Write a network's weights (safetensors + JSON metadata), atomically."""
    meta = {"format": WEIGHTS_FORMAT, "format_version": WEIGHTS_VERSION, "spinimpute_version": __version__,
            "hyperparameters": config.hyperparameters(), **metadata}
    with atomic_output(path, index=False) as tmp:
        write_safetensors(tmp, {k: np.array(v, dtype=np.float32, order="C") for k, v in weights.items()},
                          {METADATA_KEY: json.dumps(meta)})


def load_weights(path=None) -> NetworkWeights:
    """A network's weights from `path`, or the pretrained ones shipped with spinimpute; ModelFileError if the
    file is not a spinimpute network (a model file is one: its network is read)."""
    import hashlib

    from safetensors import SafetensorError, safe_open

    path = Path(path) if path is not None else PRETRAINED_WEIGHTS
    if not path.is_file():
        raise ModelFileError(path, "file not found" if not path.exists() else "not a file")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    try:
        with safe_open(str(path), framework="numpy") as handle:
            metadata = json.loads((handle.metadata() or {}).get(METADATA_KEY, "{}"))
            if metadata.get("format") not in (WEIGHTS_FORMAT, FORMAT_NAME):
                raise ModelFileError(path, "not spinimpute network weights (nor a spinimpute model)")
            version, expected = metadata.get("format_version"), {WEIGHTS_FORMAT: WEIGHTS_VERSION,
                                                                 FORMAT_NAME: FORMAT_VERSION}[metadata["format"]]
            if version != expected:
                raise ModelFileError(path, f"{metadata['format']} format version {version} is not supported by "
                                           f"spinimpute {__version__} (expects {expected}); make the weights again "
                                           "with this version")
            prefix = "network." if metadata["format"] == FORMAT_NAME else ""
            weights = {k[len(prefix):]: handle.get_tensor(k) for k in handle.keys()  # noqa: SIM118 - not a dict
                       if k.startswith(prefix) and not k.startswith("contig")}
        config = ModelConfig.from_hyperparameters(metadata["hyperparameters"])
        _check_weights(weights, config)
    except ModelFileError:
        raise
    except (SafetensorError, OSError, KeyError, TypeError, ValueError, json.JSONDecodeError) as exc:
        raise ModelFileError(path, f"corrupt or inconsistent network weights ({exc})") from None
    return NetworkWeights(weights, config, digest, metadata)
