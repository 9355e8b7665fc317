"""The filters plugin's commands (register_commands): `synth report` (a run's page), `synth
sweep` (a grid of runs on the fidelity-diversity plane) and `synth evaluate` (a labeller against
held-out labelled images). Each imports its module only when run, so `synth --help` stays fast."""

from __future__ import annotations

import json
from pathlib import Path

import click

from synth.cli_types import THREADS, LocalPath
from synth.errors import UsageError


def register(cli: click.Group) -> None:
    cli.add_command(evaluate)
    cli.add_command(sweep)
    cli.add_command(report)


@click.command()
@click.argument("manifest", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--labelled", help="Held-out labelled images: a folder (masks NAME.seg.png beside them, or --masks), or shards with seg.png.")
@click.option("--masks", type=click.Path(file_okay=False, path_type=Path), help="Folder of NAME.png class-id masks for a --labelled folder.")
@click.option("--size", type=click.IntRange(min=8), help="Resize held-out images and masks to SIZE x SIZE (the generator's resolution).")
@click.option("--count", "-n", type=click.IntRange(min=1), help="Evaluate on the first N images (default: all).")
@click.option("--source", "source_toml", help='Instead of --labelled: any source stage as an inline TOML table, e.g. \'{name = "shapes", split = "test"}\'.')
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--quiet", "-q", is_flag=True, help="No progress display.")
@click.option("--threads", type=THREADS, help="Model library threads.")
def evaluate(manifest: Path, labelled: str, masks, size, count, source_toml, as_json: bool, quiet: bool, threads):
    """Label held-out labelled images with MANIFEST's labelling stages; print per-class IoU and mIoU."""
    import tomllib

    from synth.manifest import load_manifest

    from .evaluate import evaluate as run_evaluation
    from .evaluate import format_evaluation, labelled_source

    if (labelled is None) == (source_toml is None):
        raise UsageError("give --labelled PATH or --source TABLE (one of them)")
    m = load_manifest(manifest)
    if source_toml:
        try:
            table = tomllib.loads(f"source = {source_toml}")["source"]
        except tomllib.TOMLDecodeError as e:
            raise UsageError(f"--source: not an inline TOML table: {e}") from None
        if size and isinstance(table, dict):
            table.setdefault("size", size)
    else:
        table = labelled_source(labelled, str(masks) if masks else None, size)
    result = run_evaluation(m, table, count=count, quiet=quiet, threads=threads)
    click.echo(json.dumps(result, indent=2) if as_json else format_evaluation(result))


@click.command()
@click.argument("manifest", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--set", "sets", multiple=True, required=True, help="KEY=v1,v2,... e.g. generator.steps=10,20 or stage.views.sigma=0.1,0.3 (once or twice)")
@click.option("--out", "-o", type=click.Path(file_okay=False, path_type=Path), help="Folder of the runs (default: <output>-sweep beside the manifest's output).")
@click.option("--quiet", "-q", is_flag=True)
@click.option("--threads", type=THREADS)
def sweep(manifest: Path, sets, out, quiet: bool, threads):
    """Run MANIFEST over values of one or two fields; plot precision/recall and density/coverage with the Pareto front."""
    from .sweep import sweep as run_sweep

    r = run_sweep(manifest, list(sets), out, quiet, threads)
    click.echo(r["table"])
    click.echo(f"plot: {r['folder']}/sweep.png")


@click.command()
@click.argument("output", type=LocalPath(file_okay=False))
@click.option("--samples", "-n", default=32, show_default=True, type=click.IntRange(min=1), help="Samples in the grid.")
def report(output: Path, samples: int):
    """Write OUTPUT/report.html (self-contained) and report.md: samples, metrics, classes, scores, drops."""
    from .report import write

    page, twin = write(output, samples)
    click.echo(f"wrote {page} and {twin}")
