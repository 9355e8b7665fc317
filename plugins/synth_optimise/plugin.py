from pathlib import Path

from synth.hookspecs import hookimpl

from .influence import Influence
from .tasks import ClassificationTask, SegmentationTask


@hookimpl
def register_stages(register):
    register(Influence)


@hookimpl
def register_tasks(register):
    register(SegmentationTask)
    register(ClassificationTask)


@hookimpl
def register_classifiers(register):
    from .task_model import TaskModelClassifier

    register(TaskModelClassifier)


@hookimpl
def register_report_sections(register):
    from .report_section import OptimiseSection

    register(OptimiseSection)


@hookimpl
def register_commands(cli):
    import click

    from synth.cli_types import THREADS

    @cli.command()
    @click.argument("manifest", type=click.Path(dir_okay=False, path_type=Path))
    @click.option("--space", "space", required=True, type=click.Path(dir_okay=False, path_type=Path), help="The search space: [task], [search] and [values] (see docs/guide/optimise.md).")
    @click.option("--validation", required=True, help="Labelled real images the task is scored on: a folder (NAME.seg.png beside each image, or class subfolders) or shards.")
    @click.option("--out", "-o", type=click.Path(file_okay=False, path_type=Path), help="Folder of the trials and results (default: <output>-optimise).")
    @click.option("--quiet", "-q", is_flag=True)
    @click.option("--threads", type=THREADS)
    def optimise(manifest, space, validation, out, quiet, threads):
        """Find the manifest values whose dataset teaches the downstream task most (successive halving); resumes."""
        from .search import optimise as run_search

        r = run_search(manifest, space, validation, out=out, quiet=quiet, threads=threads)
        best = r["best"]
        click.echo(f"best: {best['label']} ({r['score']} {best['score']:.4f} on {best['samples']} samples), "
                   f"{len(r['trials'])} trials costing {r['cost_runs']:.2f} runs; {r['folder']}/best.toml, "
                   + ("best-model/, " if r.get("best_model") else "") + "optimise.md, optimise.png")
