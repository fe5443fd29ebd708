"""The train and impute jobs: file in, file out, composed from the library's parts.

The CLI parses options and calls these; tests and scripts call them the same way. Each
job resolves its device once, at its start (`spinimpute.engine.device.select_device`),
and is a sequence of named stages.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
from tqdm import tqdm

from spinimpute import __version__
from spinimpute.engine.cpu import CpuImputer
from spinimpute.engine.device import Device, DeviceRequest, return_free_memory, select_device
from spinimpute.engine.impute import ImputedBlock, impute_contig
from spinimpute.engine.protocol import Imputer
from spinimpute.engine.statistics import site_statistics
from spinimpute.errors import InputFileError, check_output_path
from spinimpute.io.atomic import atomic_output, scratch_directory
from spinimpute.io.matching import match_contig
from spinimpute.io.modelfile import ModelBundle, load_model
from spinimpute.io.reading import read_target
from spinimpute.io.writing import ImputedVcfWriter, OutputFormat, RecordBlock, output_format
from spinimpute.model.config import ModelConfig
from spinimpute.panel import ReferenceContig
from spinimpute.target import Target, TargetContig

# Training and GPUs run torch code; `impute` on a CPU, phasing included, does without it (see
# `spinimpute.engine.cpu`), so torch and the modules that use it are imported where needed.
if TYPE_CHECKING:
    from spinimpute.training.trainer import TrainingOptions

log = logging.getLogger(__name__)

DEFAULT_WINDOW_SITES = 2000
DEFAULT_FLANK_SITES = 1000
# Imputed probabilities waiting to be written; bounds the memory that writing behind imputation adds.
WRITE_QUEUE_BYTES = 256 * 2**20
# Probabilities formatted as one piece of text: a window's sites for a large cohort are cut into
# pieces (the text is about 4 times the probabilities' bytes, GT:DS:GP), so that the text being
# formatted on each thread does not grow with the cohort, nor each piece take new memory
# (BENCHMARKS.md, constants).
FORMAT_PIECE_BYTES = 4 * 2**20

Precision = Literal["auto", "float32", "mixed"]


@dataclasses.dataclass
class TrainSummary:
    """What `train_job` did: the training summary stored in the model file, and the time."""

    model: str
    training: dict
    seconds: float


@dataclasses.dataclass
class ImputeSummary:
    """What `impute_job` did, as written to its JSON summary.

    Attributes:
        target_sites: how the target's records were matched to the panel, each case counted
            (`spinimpute.io.reading.read_target`), with every A/T and C/G site listed.
    """

    spinimpute_version: str
    command_line: str
    target: str
    model: str
    output: str
    contigs: list[str]
    region: str | None
    samples: int
    samples_in_reference_panel: int
    sites_written: int
    phase_draws: int
    target_sites: dict
    seconds: float
    device: str = "cpu"
    precision: str = "float32"
    gpu_peak_memory_mb: float | None = None

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def train_job(
    *,
    ref_path,
    out_path,
    map_path=None,
    options: TrainingOptions,
    weights_path=None,
    window_sites: int = DEFAULT_WINDOW_SITES,
    flank_sites: int = DEFAULT_FLANK_SITES,
    device: DeviceRequest = "auto",
    threads: int = 1,
    command_line: str = "",
    progress: bool = True,
) -> TrainSummary:
    """Prepare a reference panel into a model file.

    Reads the panel, starts from the network pretrained on simulated panels (or the one in
    `weights_path`), fine-tunes it on the panel for `options.steps` steps (none by default),
    fits the weight of its corrections on held-out panel individuals, encodes the panel's
    inducing points and writes the model file, which records the starting weights' checksum.
    """
    from spinimpute.engine.torch_backend import configure_torch, network_from_weights
    from spinimpute.io.modelfile import load_weights, save_model
    from spinimpute.training.trainer import encode_panel, fit_refinement, held_out_samples, train

    start = time.time()
    resolved = select_device(device)
    configure_torch(threads, options.seed)
    out_path = check_output_path(out_path)
    starting = load_weights(weights_path)
    # The panel's packed haplotypes are spilled to a scratch directory beside the model as they are
    # read, and read back per window: memory does not grow with the panel's length.
    with scratch_directory(out_path) as scratch:
        samples, lengths, counts, contigs = read_reference(ref_path, map_path, window_sites=window_sites,
                                                           flank_sites=flank_sites, threads=threads, spill=scratch)
        return_free_memory()  # the reading's blocks
        network = network_from_weights(starting.weights, starting.config.replace(refinement_weight=1.0))
        summary: dict = {"options": dataclasses.asdict(options),
                         "weights": {"file": str(weights_path) if weights_path else "pretrained", "sha256": starting.sha256}}
        log.info("starting from %s network weights (sha256 %s)", summary["weights"]["file"], starting.sha256[:12])
        held_out = held_out_samples(len(samples), options)  # the same individuals training holds out
        if len(held_out) < options.validation_samples:
            log.warning("a panel of %d samples leaves %d for the held-out checks (of %d): training's effect and the "
                        "corrections' weight rest on %s; with %d or more samples they use %d", len(samples),
                        len(held_out), options.validation_samples,
                        f"{len(held_out)} individuals" if len(held_out) else "none (corrections kept at 1)",
                        5 * options.validation_samples, options.validation_samples)
        if options.steps:
            summary.update(train(network, [contigs], options, device=resolved, progress=progress))
            for key in ("validation_before", "validation_after"):
                if key in summary:
                    log.info("%s: r2 %.4f, loss %.5f", key.replace("_", " "), summary[key]["r2"], summary[key]["loss"])
        summary["validation_samples"] = len(held_out)
        summary["validation_individuals"] = held_out.tolist()
        if len(held_out):
            refinement = fit_refinement(network, contigs, held_out, options, device=resolved, threads=threads,
                                        progress=progress)
            summary["refinement"] = refinement
            switch = refinement["switch_rate"]
            log.info("copying model's Ne %.0f (held-out best factor %g, t %.1f; kept factor %g)", switch["ne"],
                     switch["best_factor"], switch["t"], switch["factor"])
            loss = refinement["cross_entropy"]
            log.info("predictor corrections weighted %.2f (held-out best %.2f, t %.1f over %d haplotypes; cross-entropy "
                     "%.5f at weight 1, %.5f for the copying model alone)", refinement["weight"], refinement["best_weight"],
                     refinement["t"], refinement["held_out_haplotypes"], loss["weight_1"], loss["copying_model"])
        encode_panel(network, contigs, device=resolved, rows=options.encoder_rows, seed=options.seed, progress=progress)
        network.cpu()
        summary["seconds"] = round(time.time() - start, 1)
        metadata = {
            "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "command_line": command_line,
            "reference_file": str(ref_path),
            "genetic_map": str(map_path) if map_path else "constant 1 cM/Mb",
            "reference_samples": samples,
            "contig_lengths": lengths,
            "reference_records": counts,
            "window_sites": window_sites,
            "flank_sites": flank_sites,
            "training": summary,
        }
        config = network.config.replace(refinement_weight=network.refinement_weight)
        weights = {k: v.detach().cpu().numpy() for k, v in network.state_dict().items()}
        save_model(out_path, ModelBundle(weights, config, contigs, metadata), threads=threads)
        log.info("wrote model %s in %.1f s", out_path, summary["seconds"])
        return TrainSummary(model=str(out_path), training=summary, seconds=summary["seconds"])


def read_reference(ref_path, map_path, *, window_sites: int, flank_sites: int, threads: int,
                   spill: Path | None = None) -> tuple[list[str], dict[str, int], dict[str, int],
                                                       dict[str, ReferenceContig]]:
    """A phased panel read and laid out as the model stores it: its samples, its contigs' lengths, its
    records and sites counted by kind, and its contigs placed on the genetic map (1 cM/Mb without
    one) and cut into windows. With `spill`, the packed haplotypes are written there as they are
    read (`spinimpute.io.reading.read_panel`)."""
    from spinimpute.io.genmap import DEFAULT_CM_PER_MB, read_genetic_map
    from spinimpute.io.reading import read_panel
    from spinimpute.training.trainer import build_reference

    panel = read_panel(ref_path, threads=threads, spill=spill)
    genetic_map = read_genetic_map(map_path) if map_path else None
    n_sites = sum(len(c.sites) for c in panel.contigs.values())
    c = panel.counts
    log.info("panel %s: %d samples, %d records, %d sites on %d contig(s): %d SNPs, %d indels, %d symbolic (SVs), "
             "%d other", ref_path, len(panel.samples), c["records"], n_sites, len(panel.contigs), c["snp_sites"],
             c["indel_sites"], c["symbolic_sites"], c["other_sites"])
    if c["placeholder_alleles"] or c["duplicate_sites"] or c["records_without_alt"]:
        log.info("panel %s: left out %d placeholder ALT alleles ('*', '<*>', '<NON_REF>'), %d sites repeated at "
                 "their position, %d records without an ALT", ref_path, c["placeholder_alleles"],
                 c["duplicate_sites"], c["records_without_alt"])
    if len(panel.samples) < 2:
        raise InputFileError(ref_path, "a reference panel needs at least two samples")
    if genetic_map is not None:
        unmapped = [name for name in panel.contigs if match_contig(name, list(genetic_map.positions)) is None]
        if len(unmapped) == len(panel.contigs):
            raise InputFileError(map_path, f"no rows for the panel's contig(s) {', '.join(unmapped)} "
                                           f"(the map has {', '.join(genetic_map.positions)})")
        if unmapped:
            log.warning("genetic map %s has no rows for contig(s) %s: %g cM/Mb used there", map_path,
                        ", ".join(unmapped), DEFAULT_CM_PER_MB)
    return panel.samples, panel.lengths, panel.counts, build_reference(panel, genetic_map, core=window_sites,
                                                                       flank=flank_sites)


def impute_job(
    *,
    target_path,
    model_path,
    out_path,
    device: DeviceRequest = "auto",
    threads: int = 1,
    command_line: str = "",
    progress: bool = True,
    summary_path=None,
    region: str | None = None,
    copying_states: int | None = None,
    gp: bool = True,
    precision: Precision = "auto",
    phase_draws: int | None = None,
    seed: int = 1,
) -> ImputeSummary:
    """Impute every panel site of the target's contigs and write an indexed VCF.

    The FORMAT fields are GT:DS:GP, or GT:DS without `gp`. `summary_path`, when given,
    receives the JSON summary (`ImputeSummary`). On the CPU the model runs without torch
    (`CpuImputer`), as `spinimpute impute` runs it. `precision` "mixed" runs the SPIN
    predictor under bfloat16 autocast (through the torch module, on the CPU too), "float32"
    does not, "auto" is mixed on a GPU only. An unphased target is phased against the panel,
    and `phase_draws` phasings drawn beside the most likely one (`PHASE_DRAWS` by default,
    seeded by `seed`) are imputed too and averaged with it.
    """
    start = time.time()
    resolved = select_device(device)
    check_output_path(out_path)
    fmt = output_format(out_path)
    if summary_path is not None:
        check_output_path(summary_path)
    bundle = load_model(model_path, threads=threads)
    config = bundle.config if copying_states is None else bundle.config.replace(copying_states=copying_states)
    target, names, in_panel = prepare_target(target_path, bundle, threads=threads)
    site_ranges = region_sites(region, bundle, names, target_path, model_path)
    if region is not None:
        names = list(site_ranges)
    # The model's CPU inference: it phases on any device and imputes on the CPU.
    cpu_model = CpuImputer(bundle.weights, config, threads=threads)
    draws = 0
    phased = {name: target.contigs[name] for name in names}
    if target.counts["unphased_het"]:
        phased, draws = phase_target(cpu_model, bundle, target, site_ranges, draws=phase_draws, seed=seed,
                                     threads=threads)
    backend = make_backend(cpu_model, bundle, config, resolved, precision, threads)
    header = [
        f"##filedate={datetime.date.today():%Y%m%d}",
        f'##source="spinimpute {__version__}"',
        f"##spinimpute_version={__version__}",
        f"##spinimpute_command={command_line}",
        f"##spinimpute_model={Path(model_path).name}",
    ]
    n_written = write_imputed(out_path, backend, bundle, phased, site_ranges, samples=target.samples, header=header,
                              gp=gp, fmt=fmt, names=target.names, threads=threads, progress=progress)
    seconds = round(time.time() - start, 1)
    log.info("wrote %s: %d sites x %d samples in %.1f s", out_path, n_written, len(target.samples), seconds)
    gpu_peak_mb = None
    if resolved == "cuda":
        import torch

        gpu_peak_mb = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        log.info("GPU memory: at most %.0f MB allocated", gpu_peak_mb)
    summary = ImputeSummary(
        spinimpute_version=__version__, command_line=command_line, target=str(target_path), model=str(model_path),
        output=str(out_path), contigs=names, region=region, samples=len(target.samples),
        samples_in_reference_panel=len(in_panel), sites_written=n_written, phase_draws=draws,
        target_sites=target.counts, seconds=seconds, device=resolved,
        precision=resolve_precision(precision, resolved), gpu_peak_memory_mb=gpu_peak_mb,
    )
    if summary_path is not None:
        write_json(summary_path, summary.as_dict())
    return summary


def prepare_target(target_path, bundle: ModelBundle, *, threads: int) -> tuple[Target, list[str], list[str]]:
    """Read the target at the model's panel sites; return it, the contigs to impute (model order)
    and the target samples that are also reference samples. Logs how records were matched."""
    panel_sites = {name: c.sites for name, c in bundle.contigs.items()}
    alt_freq = {name: c.alt_freq for name, c in bundle.contigs.items()}
    target = read_target(target_path, panel_sites, alt_freq, threads=threads,
                         panel_haplotypes=lambda name, index: bundle.contigs[name].haplotypes_at(index))
    names = [c for c in bundle.contigs if c in target.contigs]
    if not target.counts["records"]:
        raise InputFileError(target_path, "the file has no variant records")
    if not names:
        raise InputFileError(target_path, "no target site overlaps the model's panel sites (contigs in model: "
                                          + ", ".join(bundle.contigs) + ")")
    in_panel = sorted(set(target.samples) & set(bundle.metadata.get("reference_samples", [])))
    if in_panel:
        # A reference sample copies its own haplotypes: its imputation says nothing of accuracy.
        log.warning("%d of %d target samples are also in the model's reference panel (%s%s): they are imputed "
                    "from their own haplotypes", len(in_panel), len(target.samples), ", ".join(in_panel[:3]),
                    ", ..." if len(in_panel) > 3 else "")
    counts = target.counts
    log.info(
        "target %s: %d samples, %d records; %d matched panel sites (%d exact, %d REF/ALT swapped, "
        "%d strand-flipped, %d strand-flipped and swapped, %d A/T or C/G oriented by frequency, %d by linkage "
        "with neighbouring markers); dropped: "
        "%d not in the panel, %d other alleles, %d A/T or C/G that neither could orient, %d duplicates, "
        "%d on contigs not in the model; %d genotype calls carry an allele the panel lacks (missing at the record's "
        "other alleles)",
        target_path, len(target.samples), counts["records"], counts["matched"], counts["exact"], counts["swapped"],
        counts["strand"], counts["strand_swapped"], counts["ambiguous_resolved"], counts["ambiguous_linkage"],
        counts["not_in_panel"],
        counts["allele_mismatch"], counts["ambiguous_dropped"], counts["duplicate"], counts["other_contig"],
        counts["absent_allele_calls"],
    )
    if counts.get("renamed_contigs"):
        log.warning("target contig names reconciled with the model's: %s", ", ".join(counts["renamed_contigs"]))
    return target, names, in_panel


def region_sites(region: str | None, bundle: ModelBundle, names: list[str], target_path,
                 model_path) -> dict[str, range | None]:
    """The panel site indices to impute per contig: all (None) without `region`, else its one contig's range."""
    if region is None:
        return {name: None for name in names}
    chrom, first, last = parse_region(region)
    name = match_contig(chrom, list(bundle.contigs))
    if name is None or name not in names:
        raise InputFileError(target_path, f"region contig '{chrom}' is not among the contigs imputed: {', '.join(names)}")
    positions = bundle.contigs[name].sites.positions
    lo = np.searchsorted(positions, first, side="left")
    hi = np.searchsorted(positions, last, side="right")
    if hi == lo:
        raise InputFileError(model_path, f"region {region} holds none of the model's panel sites (contig {name}: "
                                         f"{positions[0]:,}-{positions[-1]:,})")
    return {name: range(int(lo), int(hi))}


def phase_target(cpu_model: CpuImputer, bundle: ModelBundle, target: Target, site_ranges: dict[str, range | None], *,
                 draws: int | None, seed: int, threads: int) -> tuple[dict[str, TargetContig], int]:
    """Phase the unphased heterozygotes of the contigs in `site_ranges`; return the phased contigs
    and the number of phasings drawn beside the most likely one."""
    from spinimpute.engine.phasing import PHASE_DRAWS, phase_contig, sample_keys

    n_draws = PHASE_DRAWS if draws is None else draws
    keys = sample_keys(target.samples)
    log.info("phasing %d unphased heterozygous target genotypes against the panel; imputing the most likely "
             "phase and %d drawn phasings", target.counts["unphased_het"], n_draws)
    phased = {
        name: phase_contig(cpu_model, bundle.contigs[name], target.contigs[name], sample_keys=keys, sites=sites,
                           draws=n_draws, seed=seed, threads=threads)
        for name, sites in site_ranges.items()
    }
    return phased, n_draws


def resolve_precision(precision: Precision, device: Device) -> Literal["float32", "mixed"]:
    """The SPIN predictor's arithmetic: 'auto' is bfloat16 ('mixed') on a GPU, float32 on the CPU."""
    if precision == "auto":
        return "float32" if device == "cpu" else "mixed"
    return precision


def make_backend(cpu_model: CpuImputer, bundle: ModelBundle, config: ModelConfig, device: Device,
                 precision: Precision, threads: int) -> Imputer:
    """The backend that imputes: the CPU one, or the torch module on `device` (a GPU, or mixed precision)."""
    mixed = resolve_precision(precision, device) == "mixed"
    if device == "cpu" and not mixed:
        return cpu_model
    from spinimpute.engine.torch_backend import TorchImputer, configure_torch, network_from_weights

    configure_torch(threads)
    network = network_from_weights(bundle.weights, config)
    return TorchImputer(network, device, mixed_precision=mixed)


def write_imputed(out_path, backend: Imputer, bundle: ModelBundle, phased: dict[str, TargetContig],
                  site_ranges: dict[str, range | None], *, samples: list[str], header: list[str], gp: bool,
                  fmt: OutputFormat, names: dict[str, str], threads: int, progress: bool) -> int:
    """Impute the contigs window by window and write the VCF (indexed where bgzipped); return the
    sites written. Contigs are written under the target's names (`names`, where they differ).

    Blocks are formatted on `threads` threads behind imputation and written in order
    (compressed on `threads` more), with up to WRITE_QUEUE_BYTES of probabilities queued.
    """
    lengths = bundle.metadata.get("contig_lengths", {})
    contigs = {names.get(n, n): lengths.get(n) for n in site_ranges}
    total_sites = sum(len(bundle.contigs[n].sites) if r is None else len(r) for n, r in site_ranges.items())
    n_written = 0
    with atomic_output(out_path, index=fmt == "bgzf") as tmp:
        writer = ImputedVcfWriter(tmp, samples=samples, contigs=contigs, extra_header=header, threads=threads,
                                  index_path=f"{tmp}.tbi" if fmt == "bgzf" else None, gp=gp, fmt=fmt, names=names)

        def block_text(sites, block) -> RecordBlock:
            af, dr2 = site_statistics(block.hap_prob, block.haploid)
            return writer.block_text(sites, block.start, block.hap_prob, block.typed, af, dr2, block.haploid)

        try:
            bar = tqdm(total=total_sites, desc="imputing", unit="site", disable=not progress)
            with ThreadPoolExecutor(max_workers=threads) as formatting:
                pending: deque = deque()
                for name, sites in site_ranges.items():
                    contig = bundle.contigs[name]
                    for block in impute_contig(backend, contig, phased[name], name=name, sites=sites):
                        for piece in split_block(block, FORMAT_PIECE_BYTES):
                            pending.append((formatting.submit(block_text, contig.sites, piece), piece.hap_prob.nbytes))
                            while pending and (pending[0][0].done() or sum(n for _, n in pending) > WRITE_QUEUE_BYTES):
                                writer.write_records(pending.popleft()[0].result())
                        n_written += block.hap_prob.shape[0]
                        bar.update(block.hap_prob.shape[0])
                while pending:
                    writer.write_records(pending.popleft()[0].result())
            bar.close()
        finally:
            writer.close()
    return n_written


def split_block(block: ImputedBlock, max_bytes: int) -> list[ImputedBlock]:
    """`block` cut into consecutive blocks of sites whose probabilities take at most `max_bytes` (one site at least)."""
    n_sites = block.hap_prob.shape[0]
    step = max(1, max_bytes // max(1, block.hap_prob[:1].nbytes))
    if step >= n_sites:
        return [block]
    return [
        ImputedBlock(block.contig, block.start + a, block.start + min(a + step, n_sites), block.hap_prob[a : a + step],
                     block.typed[a : a + step], None if block.haploid is None else block.haploid[a : a + step])
        for a in range(0, n_sites, step)
    ]


def parse_region(text: str) -> tuple[str, int, int]:
    """'CHR', 'CHR:START-END', 'CHR:START-' or 'CHR:-END' (1-based, inclusive) -> (chrom, start, end)."""
    chrom, _, span = text.partition(":")
    if not chrom:
        raise ValueError(f"region '{text}' has no contig")
    if not span:
        return chrom, 1, 2**62
    first, sep, last = span.replace(",", "").partition("-")
    try:
        start = int(first) if first else 1
        end = int(last) if last else (2**62 if sep else start)
    except ValueError:
        raise ValueError(f"region '{text}' is not CHR:START-END") from None
    if start < 1 or end < start:
        raise ValueError(f"region '{text}' has an empty or negative span")
    return chrom, start, end


def summary_path_for(out_path) -> str:
    """OUT.vcf.gz -> OUT.summary.json."""
    name = str(out_path)
    for suffix in (".vcf.gz", ".vcf.bgz", ".vcf", ".gz"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return name + ".summary.json"


def write_json(path, data) -> None:
    """Write `data` as JSON, atomically (see `atomic_output`)."""
    with atomic_output(path, index=False) as tmp:
        tmp.write_text(json.dumps(data, indent=1, default=_json_default) + "\n")


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot serialise {type(value)}")
