"""The model file: safetensors tensors plus JSON metadata, never pickles.

One file holds everything `impute` needs: the network weights, and for each contig the
panel's sites (positions, alleles, cM, frequencies), its haplotypes bit-packed, the
window layout and each window's cached inducing points. Loading parses tensors and JSON
only; no code from the file is run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from spinimpute import __version__
from spinimpute.errors import ModelFileError, OutputFileError
from spinimpute.model import SpinImputer
from spinimpute.vcf import Sites
from spinimpute.windows import Window

FORMAT_NAME = "spinimpute-model"
FORMAT_VERSION = 1
METADATA_KEY = "spinimpute"


@dataclass
class ReferenceContig:
    """A contig of the reference panel as the model stores it.

    Attributes:
        sites: positions and alleles.
        cm: (n_sites,) float64 genetic positions.
        packed_haplotypes: (n_sites, ceil(n_haplotypes / 8)) uint8, np.packbits of the
            0/1 ALT indicators along the haplotype axis.
        n_haplotypes: number of reference haplotypes.
        alt_freq: (n_sites,) float32 ALT frequency in the panel.
        windows: the window layout.
        inducing: (n_windows, I, F*E) float32 cached inducing points, or None before
            the panel has been encoded.
    """

    sites: Sites
    cm: np.ndarray
    packed_haplotypes: np.ndarray
    n_haplotypes: int
    alt_freq: np.ndarray
    windows: list[Window]
    inducing: np.ndarray | None = None

    def haplotypes(self, start: int, stop: int) -> np.ndarray:
        """(stop - start, n_haplotypes) uint8 ALT indicators of sites [start, stop)."""
        return np.unpackbits(self.packed_haplotypes[start:stop], axis=1, count=self.n_haplotypes)


@dataclass
class ModelBundle:
    network: SpinImputer
    hyperparameters: dict
    contigs: dict[str, ReferenceContig]
    metadata: dict


def _strings_to_tensor(values: list[str]) -> torch.Tensor:
    data = "\n".join(values).encode()
    return torch.frombuffer(bytearray(data), dtype=torch.uint8) if data else torch.zeros(0, dtype=torch.uint8)


def _tensor_to_strings(t: torch.Tensor, n: int) -> list[str]:
    if n == 0:
        return []
    values = bytes(t.numpy().tobytes()).decode().split("\n")
    if len(values) != n:
        raise ValueError("string table length mismatch")
    return values


def save_model(path, bundle: ModelBundle) -> None:
    """Write the model atomically (temporary name, then rename)."""
    from safetensors.torch import save_file

    tensors = {f"network.{k}": v.detach().cpu().contiguous() for k, v in bundle.network.state_dict().items()}
    contig_meta = []
    for i, (name, c) in enumerate(bundle.contigs.items()):
        p = f"contig{i}."
        tensors[p + "positions"] = torch.from_numpy(c.sites.positions.astype(np.int64))
        tensors[p + "cm"] = torch.from_numpy(c.cm.astype(np.float64))
        tensors[p + "haplotypes"] = torch.from_numpy(c.packed_haplotypes)
        tensors[p + "alt_freq"] = torch.from_numpy(c.alt_freq.astype(np.float32))
        tensors[p + "windows"] = torch.tensor([[w.start, w.stop, w.core_start, w.core_stop] for w in c.windows])
        tensors[p + "ids"] = _strings_to_tensor(c.sites.ids)
        tensors[p + "refs"] = _strings_to_tensor(c.sites.refs)
        tensors[p + "alts"] = _strings_to_tensor(c.sites.alts)
        if c.inducing is None:
            raise ValueError(f"contig {name} has no encoded inducing points")
        tensors[p + "inducing"] = torch.from_numpy(np.ascontiguousarray(c.inducing, dtype=np.float32))
        contig_meta.append({"name": name, "n_sites": len(c.sites), "n_haplotypes": c.n_haplotypes})
    metadata = dict(bundle.metadata)
    metadata.update(
        {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "spinimpute_version": __version__,
            "hyperparameters": bundle.hyperparameters,
            "contigs": contig_meta,
        }
    )
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        save_file(tensors, str(tmp), metadata={METADATA_KEY: json.dumps(metadata)})
        tmp.replace(path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise OutputFileError(path, f"could not write the model: {exc.strerror or exc}") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def load_model(path) -> ModelBundle:
    """Read a model file, checking its format and version."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.exists():
        raise ModelFileError(path, "file not found")
    if path.is_dir():
        raise ModelFileError(path, "is a directory, not a spinimpute model file")
    with open(path, "rb") as handle:
        start = handle.read(16)
    if start.startswith(b"\x1f\x8b") or start.startswith(b"##fileformat") or start.startswith(b"BCF"):
        raise ModelFileError(
            path, f"is a VCF/BCF, not a spinimpute model; make one with 'spinimpute train --ref {path} --out MODEL'"
        )
    try:
        with safe_open(str(path), framework="pt") as handle:
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
                    f"(expects {FORMAT_VERSION}); retrain the model with this version",
                )
            tensors = {k: handle.get_tensor(k) for k in handle.keys()}
    except ModelFileError:
        raise
    except (SafetensorError, OSError, ValueError, json.JSONDecodeError) as exc:
        raise ModelFileError(path, f"corrupt or truncated model file ({exc})") from None
    except Exception as exc:  # safetensors raises other types on some malformed headers
        raise ModelFileError(path, f"corrupt or truncated model file ({exc})") from None
    try:
        hyper = metadata["hyperparameters"]
        network = SpinImputer(**hyper)
        state = {k[len("network.") :]: v for k, v in tensors.items() if k.startswith("network.")}
        network.load_state_dict(state)
        network.eval()
        contigs = {}
        for i, meta in enumerate(metadata["contigs"]):
            p = f"contig{i}."
            n = meta["n_sites"]
            sites = Sites(
                meta["name"],
                tensors[p + "positions"].numpy(),
                _tensor_to_strings(tensors[p + "ids"], n),
                _tensor_to_strings(tensors[p + "refs"], n),
                _tensor_to_strings(tensors[p + "alts"], n),
            )
            windows = [Window(*map(int, row)) for row in tensors[p + "windows"].tolist()]
            contigs[meta["name"]] = ReferenceContig(
                sites=sites,
                cm=tensors[p + "cm"].numpy(),
                packed_haplotypes=tensors[p + "haplotypes"].numpy(),
                n_haplotypes=int(meta["n_haplotypes"]),
                alt_freq=tensors[p + "alt_freq"].numpy(),
                windows=windows,
                inducing=tensors[p + "inducing"].numpy(),
            )
            if len(sites.positions) != n or contigs[meta["name"]].packed_haplotypes.shape[0] != n:
                raise ValueError("site arrays disagree")
    except (KeyError, TypeError, ValueError, RuntimeError, UnicodeDecodeError) as exc:
        raise ModelFileError(path, f"inconsistent model file ({exc})") from None
    return ModelBundle(network, hyper, contigs, metadata)
