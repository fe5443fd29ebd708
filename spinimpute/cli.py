"""Command-line interface: parses options and wires them to `spinimpute.jobs`."""

from __future__ import annotations

import logging
import os
import shlex
import signal
import sys

import click

from spinimpute import __version__
from spinimpute.engine.device import available_cpus, keep_freed_memory
from spinimpute.errors import SpinImputeError, check_output_path

# OpenMP's idle threads (torch's) sleep rather than spin: on a machine shared with other jobs,
# spinning threads slow training down (BENCHMARKS.md, "Training beside other jobs").
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

log = logging.getLogger("spinimpute")


def _command_line() -> str:
    return " ".join(shlex.quote(a) for a in ["spinimpute", *sys.argv[1:]])


def _check_region(value):
    if value is None:
        return None
    from spinimpute.jobs import parse_region

    try:
        parse_region(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    return value


def _report_errors(invoke, ctx: click.Context):
    """Run `invoke(ctx)`, turning user errors into one line on stderr and an exit code (--debug: tracebacks)."""
    try:
        return invoke(ctx)
    except SpinImputeError as exc:
        if ctx.obj and ctx.obj.get("debug"):
            raise
        click.echo(f"spinimpute: error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("spinimpute: interrupted; no output was written", err=True)
        sys.exit(130)


class _Group(click.Group):
    def invoke(self, ctx):
        return _report_errors(super().invoke, ctx)


class _Command(click.Command):
    def invoke(self, ctx):
        return _report_errors(super().invoke, ctx)


def _configure_logging(verbose: int, quiet: bool) -> None:
    level = logging.WARNING if quiet else (logging.DEBUG if verbose > 1 else logging.INFO)
    logging.basicConfig(level=level, format="spinimpute: %(message)s", stream=sys.stderr, force=True)


threads_option = click.option(
    "--threads", "-t", type=click.IntRange(min=1), default=available_cpus, metavar="N",
    show_default="the CPUs this process may use",
    help="CPU threads (torch, compiled kernels, htslib, output compression).",
)
device_option = click.option(
    "--device",
    type=click.Choice(["auto", "cpu", "cuda"]),
    default="auto",
    show_default=True,
    help="Compute device; 'auto' uses a GPU when there is one, else the CPU; 'cuda' without one is an error.",
)
seed_option = click.option("--seed", type=int, default=1, show_default=True, metavar="N", help="Random seed.")


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="spinimpute")
@click.option("-v", "--verbose", count=True, help="More log messages (repeatable).")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors; no progress bars.")
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
@click.pass_context
def main(ctx, verbose, quiet, debug):
    """Genotype imputation with Semi-Parametric Inducing Point Networks (SPIN).

    Train a model on a phased reference panel once, then impute study samples against it.
    """
    _configure_logging(verbose, quiet)
    ctx.obj = {"debug": debug, "progress": not quiet}
    if hasattr(signal, "SIGPIPE"):
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)


@main.command()
@click.option("--ref", "ref_path", required=True, metavar="FILE", help="Phased reference panel (VCF, bgzipped or plain, or BCF); indels and SVs are sites, one per ALT allele.")
@click.option("--out", "-o", "out_path", required=True, type=click.Path(dir_okay=False), metavar="FILE",
              help="Model file to write.")
@click.option("--map", "map_path", type=click.Path(dir_okay=False), metavar="FILE",
              help="Genetic map (PLINK, or 'pos chr cM'). Default 1 cM/Mb (also, with a warning, for a chromosome "
                   "the map lacks).")
@click.option("--fine-tune", "fine_tune", type=click.IntRange(min=0), default=0, show_default=True, metavar="STEPS",
              help="Training steps on this panel, starting from the network's weights; by default none: the "
                   "pretrained network reads any panel as it is.")
@click.option("--weights", "weights_path", type=click.Path(dir_okay=False), metavar="FILE",
              help="Network weights to start from: a file of 'python -m spinimpute.training.pretrain', or a model "
                   "file (its network is read). Default: the pretrained weights shipped with spinimpute.")
@click.option("--window", "window_sites", type=click.IntRange(min=10), default=2000, show_default=True, metavar="N",
              help="Sites written per window.")
@click.option("--flank", "flank_sites", type=click.IntRange(min=0), default=1000, show_default=True, metavar="N",
              help="Sites of context on each side of a window.")
@seed_option
@threads_option
@device_option
@click.pass_context
def train(ctx, ref_path, out_path, map_path, fine_tune, weights_path, window_sites, flank_sites, seed, threads, device):
    """Prepare a reference panel into a model file: the pretrained network reads it, no training needed.

    Encodes the panel's inducing points, fits the copying model's switch rate and the weight of the network's
    corrections on held-out panel individuals, and stores the panel with the network; --fine-tune trains on the
    panel first. The panel's haplotypes go to a scratch directory beside the model while it is prepared (as much
    free space as the model file takes).
    """
    from spinimpute.jobs import train_job
    from spinimpute.training.trainer import TrainingOptions

    keep_freed_memory()
    train_job(
        ref_path=ref_path,
        out_path=out_path,
        map_path=map_path,
        options=TrainingOptions(steps=fine_tune, seed=seed),
        weights_path=weights_path,
        window_sites=window_sites,
        flank_sites=flank_sites,
        device=device,
        threads=threads,
        command_line=_command_line(),
        progress=ctx.obj["progress"],
    )


@main.command()
@click.option("--target", "target_path", required=True, metavar="FILE",
              help="Study genotypes (VCF/BCF), phased or unphased.")
@click.option("--model", "model_path", required=True, metavar="FILE", help="Model file written by 'spinimpute train'.")
@click.option("--out", "-o", "out_path", required=True, type=click.Path(dir_okay=False), metavar="FILE",
              help="Output VCF; its name gives the format: .vcf.gz or .vcf.bgz (bgzipped, indexed with .tbi) or "
                   ".vcf (plain text).")
@click.option("--summary", "summary_path", type=click.Path(dir_okay=False), metavar="FILE",
              help="Per-run JSON summary (target site matching counts). Default: OUT with .summary.json "
                   "in place of .vcf.gz.")
@click.option("--region", "-r", callback=lambda ctx, param, value: _check_region(value), metavar="CHR:START-END",
              help="Only impute and write panel sites in CHR:START-END (1-based, inclusive); the model's windows "
                   "give these sites the context they have in a whole-contig run.")
@click.option("--states", type=click.IntRange(min=1), metavar="N",
              help="Reference haplotypes the copying model keeps per target haplotype and window (the "
                   "best-matching ones). Default: the model's (400). More is slower, rarely more accurate.")
@click.option("--format", "format_fields", type=click.Choice(["GT,DS,GP", "GT,DS"]), default="GT,DS,GP",
              show_default=True, help="FORMAT fields written for each sample; GT,DS is Beagle's default output and "
                                      "about half the text.")
@click.option("--precision", type=click.Choice(["auto", "float32", "mixed"]), default="auto", show_default=True,
              help="'mixed' runs the SPIN predictor in bfloat16 (through torch, also on the CPU, where it is slower); "
                   "'auto' is mixed on a GPU, float32 on the CPU.")
@click.option("--phase-draws", type=click.IntRange(min=0), default=None, metavar="N",
              help="Unphased targets: phasings drawn from the phase's probabilities, imputed beside the most likely "
                   "one and averaged with it (each costs up to one more imputation). 0 imputes the most likely phase "
                   "only.  [default: 4]")
@seed_option
@threads_option
@device_option
@click.pass_context
def impute(ctx, target_path, model_path, out_path, summary_path, region, states, format_fields, precision, phase_draws,
           seed, threads, device):
    """Impute all panel sites for every target sample.

    A cohort of more than about 3,000 samples keeps its results in an unnamed temporary file in
    $TMPDIR (about 10 GB at 20,000 samples), so that memory does not grow with the cohort.
    """
    from spinimpute.jobs import impute_job, summary_path_for

    keep_freed_memory()
    impute_job(
        target_path=target_path,
        model_path=model_path,
        out_path=out_path,
        device=device,
        threads=threads,
        command_line=_command_line(),
        progress=ctx.obj["progress"],
        summary_path=summary_path or summary_path_for(out_path),
        region=region,
        copying_states=states,
        gp=format_fields == "GT,DS,GP",
        precision=precision,
        phase_draws=phase_draws,
        seed=seed,
    )


@main.command()
@click.option("--model", "model_path", required=True, metavar="FILE", help="Model file written by 'spinimpute train'.")
@click.option("--size", default="5Mb", show_default=True, metavar="LENGTH", help="Chunk length (bp, kb, Mb).")
@click.option("--buffer", default="250kb", show_default=True, metavar="LENGTH",
              help="Least extra span each side in the input columns (the model's windows may need more).")
@click.option("--out", "-o", "out_path", type=click.Path(dir_okay=False), metavar="FILE",
              help="Table to write (default: stdout).")
def chunk(model_path, size, buffer, out_path):
    """Write a table of chunks (one 'impute --region' job each) for a workflow engine.

    Columns: contig, start, end, region (for --region), input_start, input_end (the span of the target a
    job needs if the target is subset per chunk), n_sites.
    """
    from spinimpute.io.atomic import atomic_output
    from spinimpute.io.modelfile import load_model
    from spinimpute.tools.chunking import chunk_table, make_chunks, parse_length

    try:
        size_bp, buffer_bp = parse_length(size), parse_length(buffer)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    if out_path:
        check_output_path(out_path)
    table = chunk_table(make_chunks(load_model(model_path), size=size_bp, buffer=buffer_bp))
    if out_path:
        with atomic_output(out_path, index=False) as tmp:
            tmp.write_text(table)
    else:
        click.echo(table, nl=False)


@main.command()
@click.option("--out", "-o", "out_path", required=True, type=click.Path(dir_okay=False), metavar="FILE",
              help="Joined VCF; .vcf.gz or .vcf.bgz (bgzipped, indexed with .tbi) or .vcf (plain text).")
@click.argument("chunks", nargs=-1, required=True)
def ligate(out_path, chunks):
    """Join the outputs of 'impute --region' chunks into one indexed VCF, in genome order."""
    from spinimpute.io.atomic import atomic_output
    from spinimpute.io.writing import output_format
    from spinimpute.tools.chunking import ligate as ligate_chunks

    fmt = output_format(out_path)
    with atomic_output(out_path, index=fmt == "bgzf") as tmp:
        n = ligate_chunks(list(chunks), tmp, extra_header=[f"##spinimpute_command={_command_line()}"], fmt=fmt)
    log.info("wrote %s: %d records from %d chunks", out_path, n, len(chunks))


# Beagle 5.4 keys that tune its own algorithm, not what it writes: accepted and ignored with a
# warning, so that pipelines switch executables unchanged.
BEAGLE_TUNING_KEYS = frozenset([
    "burnin", "iterations", "phase-states", "imp-states", "cluster", "ne", "err", "em", "window", "overlap", "seed",
    "step-scale", "rare", "imp-segment", "imp-step", "imp-nsteps", "buffer",
])
# Beagle keys that change what it writes, with the one value this shim writes as Beagle does (None: none).
BEAGLE_OUTPUT_KEYS = {
    "impute": ("true", "spinimpute always imputes (Beagle would write only the typed markers, phased)"),
    "ap": ("false", "AP1/AP2 allele probabilities are not written"),
    "excludesamples": (None, "not supported: subset the target first (bcftools view -S ^FILE)"),
    "excludemarkers": (None, "not supported: subset the target first (bcftools view -T ^FILE)"),
    "ped": (None, "pedigree-aware phasing is not supported"),
    "truth": (None, "not supported: score the output with 'spinimpute evaluate --truth'"),
}
BEAGLE_KEYS = {"gt", "ref", "out", "map", "nthreads", "chrom", "gp"} | BEAGLE_TUNING_KEYS | set(BEAGLE_OUTPUT_KEYS)


@main.command(cls=_Command, context_settings={"ignore_unknown_options": True, "help_option_names": ["-h", "--help"]})
@click.argument("arguments", nargs=-1)
@click.pass_context
def beagle(ctx, arguments):
    """Beagle 5.4's command line: gt=STUDY.vcf.gz ref=MODEL out=PREFIX [map=] [nthreads=] [chrom=] [gp=].

    Writes PREFIX.vcf.gz (+ .tbi) and PREFIX.log as Beagle does: GT:DS, and GT:DS:GP with gp=true. ref= must
    be a spinimpute model (train one with 'spinimpute train --ref PANEL.vcf.gz'). map= is accepted but the
    model's own map is used. Beagle's tuning keys (ne=, window=, ...) are ignored with a warning; keys that
    change Beagle's output (impute=false, ap=true, excludesamples=, excludemarkers=, ped=) and unknown keys
    are errors. Also installed as 'spinimpute-beagle'.
    """
    from spinimpute.jobs import impute_job

    values = {}
    for argument in arguments:
        key, sep, value = argument.partition("=")
        if not sep or not key:
            raise click.UsageError(f"Beagle arguments are key=value pairs, got '{argument}'")
        if key not in BEAGLE_KEYS:
            raise click.UsageError(f"unknown Beagle argument '{key}'")
        if key in BEAGLE_OUTPUT_KEYS and value.lower() != BEAGLE_OUTPUT_KEYS[key][0]:
            raise click.UsageError(f"{key}={value}: {BEAGLE_OUTPUT_KEYS[key][1]}")
        values[key] = value
    missing = [k for k in ("gt", "ref", "out") if not values.get(k)]
    if missing:
        raise click.UsageError("missing required Beagle argument(s): " + ", ".join(f"{k}=" for k in missing))
    ignored = sorted(BEAGLE_TUNING_KEYS & values.keys())
    try:
        threads = int(values["nthreads"]) if "nthreads" in values else available_cpus()
    except ValueError:
        raise click.UsageError(f"nthreads={values['nthreads']} is not a number") from None
    gp = values.get("gp", "false").lower()
    if gp not in ("true", "false"):
        raise click.UsageError(f"gp={values['gp']} is not true or false")
    region = values.get("chrom")
    if region is not None:
        _check_region(region)
    prefix = values["out"]
    for output in (prefix + ".vcf.gz", prefix + ".log"):
        check_output_path(output)
    handler = logging.FileHandler(prefix + ".log", mode="w")
    handler.setFormatter(logging.Formatter("%(message)s"))
    logging.getLogger().addHandler(handler)
    try:
        log.info("spinimpute %s, Beagle-compatible command line: %s", __version__, " ".join(arguments))
        if ignored:
            log.warning("ignored Beagle tuning argument(s): %s", ", ".join(f"{k}=" for k in ignored))
        if "map" in values:
            log.warning("map=%s ignored: the model carries the genetic map it was trained with", values["map"])
        keep_freed_memory()
        impute_job(
            target_path=values["gt"],
            model_path=values["ref"],
            out_path=prefix + ".vcf.gz",
            device="auto",
            threads=max(1, threads),
            command_line=_command_line(),
            progress=(ctx.find_root().obj or {}).get("progress", True),
            region=region,
            gp=gp == "true",
        )
    except SpinImputeError as exc:  # the log holds the error too, as Beagle's does
        handler.emit(logging.makeLogRecord({"msg": f"spinimpute: error: {exc}", "levelno": logging.ERROR}))
        raise
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()


def beagle_main() -> None:
    """Entry point of the 'spinimpute-beagle' executable: the `beagle` command under its own name."""
    _configure_logging(0, False)
    standalone = _Command("spinimpute-beagle", callback=beagle.callback, params=beagle.params, help=beagle.help,
                          context_settings=beagle.context_settings)
    standalone.main(sys.argv[1:], prog_name="spinimpute-beagle")


@main.command()
@click.option("--truth", "truth_path", required=True, metavar="FILE", help="True genotypes (VCF with GT).")
@click.option("--imputed", "imputed_paths", required=True, multiple=True, metavar="FILE",
              help="Imputed VCF with FORMAT/DS; repeat to compare several files (e.g. tools) in one table and plot.")
@click.option("--label", "labels", multiple=True, metavar="NAME",
              help="Name of each --imputed file in the plot and JSON, in the same order (default: file names "
                   "without .vcf.gz).")
@click.option("--ref", "ref_path", metavar="FILE",
              help="Reference panel, for minor allele frequencies (default: from the truth).")
@click.option("--target", "target_path", metavar="FILE",
              help="Target VCF whose sites count as typed (default: sites without INFO/IMP).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), metavar="FILE",
              help="Also write the results as JSON (an object keyed by label when several files are given).")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), metavar="FILE",
              help="Plot r² by MAF bin over the untyped sites, one line per imputed file, and each file's difference "
                   "from the first (PNG, PDF or SVG; needs matplotlib).")
@click.option("--threads", "-t", type=click.IntRange(min=1), default=available_cpus, metavar="N",
              show_default="the CPUs this process may use", help="htslib threads for reading the VCFs.")
def evaluate(truth_path, imputed_paths, labels, ref_path, target_path, json_path, plot_path, threads):
    """Dosage r² by minor-allele-frequency bin over untyped sites."""
    import importlib.util

    from spinimpute.jobs import write_json
    from spinimpute.tools.evaluate import evaluate as run_evaluation
    from spinimpute.tools.evaluate import file_label, plot_r2

    for output in (json_path, plot_path):
        if output:
            check_output_path(output)
    if plot_path and not plot_path.lower().endswith((".png", ".pdf", ".svg")):
        raise click.BadParameter("the plot's format comes from its name: .png, .pdf or .svg", param_hint="--plot")
    if plot_path and importlib.util.find_spec("matplotlib") is None:
        raise click.UsageError("--plot needs matplotlib: pip install 'spinimpute[plot]'")
    if labels and (len(labels) != len(imputed_paths) or len(set(labels)) < len(labels)):
        raise click.BadParameter(f"give one distinct label per --imputed file ({len(imputed_paths)})",
                                 param_hint="--label")
    names = list(labels) or [file_label(p) for p in imputed_paths]
    if len(set(names)) < len(names):  # files of the same name in different folders
        names = list(imputed_paths)
    results = {}
    for name, path in zip(names, imputed_paths):
        results[name] = run_evaluation(truth_path, path, ref_path=ref_path, target_path=target_path, threads=threads)
        if len(imputed_paths) > 1:
            click.echo(f"# {name}: {path}")
        click.echo(results[name].table())
    if json_path:
        data = {name: r.as_dict() for name, r in results.items()}
        write_json(json_path, data if len(results) > 1 else data[names[0]])
    if plot_path:
        plot_r2(results, plot_path)


if __name__ == "__main__":
    main()
