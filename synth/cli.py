"""The `synth` command line. User errors print one line and exit 2 (usage) or 1 (runtime);
--debug shows the traceback."""

from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path

import click

from . import __version__
from .cli_types import THREADS, LocalPath
from .errors import SynthError, UsageError


class _State:
    debug = False


def _fail(message: str, code: int) -> None:
    click.echo(f"synth: error: {message}", err=True)
    sys.exit(code)


class SynthGroup(click.Group):
    """Turns SynthError (and the odd unexpected error) into one line and an exit code."""

    plugin_failures: list = []  # set by _add_plugin_commands: shown under --help

    def format_epilog(self, ctx, formatter):
        super().format_epilog(ctx, formatter)
        if self.plugin_failures:
            with formatter.section("Plugin problems (see `synth plugins`)"):
                for f in self.plugin_failures:  # one unwrapped line each, as grep finds them
                    formatter.write(f"{'':>{formatter.current_indent}}{f.line()}\n")

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except SynthError as e:
            if _State.debug:
                traceback.print_exc()
            _fail(str(e), e.exit_code)
        except KeyboardInterrupt:
            _fail("interrupted; finished shards are kept, rerun to resume", 130)
        except (click.exceptions.Exit, click.ClickException, click.exceptions.Abort, SystemExit):
            raise
        except Exception as e:  # a bug, not a user error: still one line unless --debug
            if _State.debug:
                traceback.print_exc()
                sys.exit(1)
            _fail(f"{type(e).__name__}: {e} (rerun with --debug for the traceback)", 1)


@click.group(cls=SynthGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="synth")
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
def main(debug: bool):
    """synth: turn generative models into labelled training data (WebDataset shards)."""
    _State.debug = debug


@main.command()
@click.argument("manifest", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--output", "-o", help="Output folder or fsspec URL, e.g. s3://bucket/ds (default: [dataset].output).")
@click.option("--overwrite", is_flag=True, help="Remove this folder's earlier synth output and start over.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar or summary.")
@click.option("--threads", type=THREADS, help="Model library threads (a count or 'auto'; default: [run] threads, else OMP_NUM_THREADS, else the cores).")
@click.option("--executor", help="Who runs the shard tasks: local, ray, ... (default: [run] executor).")
@click.option(
    "--executor-option", "-X", "executor_options", multiple=True, metavar="KEY=VALUE",
    help="An option of the executor, over its [run.<executor>] table, e.g. -X address=auto -X actors=16 (values are TOML scalars).",
)
def run(manifest: Path, output: str | None, overwrite: bool, quiet: bool, threads: int | None, executor: str | None, executor_options: tuple[str, ...]):
    """Run MANIFEST end to end and write shards; reruns resume."""
    from .engine import run as run_manifest
    from .manifest import load_manifest
    from .progress import BarProgress, format_summary

    options = {}
    for text in executor_options:
        key, value = _scalar_option(text, "--executor-option")
        options[key] = value
    m = load_manifest(manifest)
    summary = run_manifest(
        m, output=output, overwrite=overwrite, progress=BarProgress(disable=quiet), quiet=quiet, threads=threads,
        executor=executor, executor_options=options,
    )
    if not quiet:
        click.echo(format_summary(summary), err=True)


def _scalar_option(text: str, flag: str) -> tuple[str, object]:
    """KEY=VALUE with VALUE a TOML scalar (a bare word is a string)."""
    import tomllib

    key, sep, raw = text.partition("=")
    if not sep or not key.strip() or not raw.strip():
        raise UsageError(f"{flag} {text!r}: expected KEY=VALUE")
    try:
        return key.strip(), tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        return key.strip(), raw.strip()


@main.command()
@click.argument("manifest", type=click.Path(dir_okay=False, path_type=Path))
def validate(manifest: Path):
    """Check MANIFEST without loading any model (exit 0 valid, 2 invalid)."""
    from .manifest import load_manifest

    m = load_manifest(manifest)
    stages = ", ".join(s.name for s in m.stages)
    gen = m.generator.name if m.generator else "none"
    click.echo(f"{manifest}: valid ({m.dataset.num_samples} samples, generator {gen}, stages {stages}; hash {m.hash[:12]})")


@main.command()
@click.option("--markdown", is_flag=True, help="The options reference as markdown (docs/reference.md) instead.")
def schema(markdown: bool):
    """Print the manifest's JSON Schema (with every loaded plugin's config)."""
    from .manifest import json_schema
    from .plugins import load_registry

    if markdown:
        from .schema_doc import markdown as reference

        click.echo(reference(load_registry()), nl=False)
        return
    click.echo(json.dumps(json_schema(load_registry()), indent=2))


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def plugins(as_json: bool):
    """List loaded plugins, their versions and what they provide."""
    from dataclasses import asdict

    from .plugins import ALLOWLIST_ENV, load_registry

    reg = load_registry()
    if as_json:
        failed = [{**asdict(f), "failed": True, "error": f.line()} for f in reg.failures]
        click.echo(json.dumps([asdict(p) for p in reg.plugins.values()] + failed, indent=2))
        return
    for p in reg.plugins.values():
        kind = "built-in" if p.builtin else "third-party"
        click.echo(f"{p.name} {p.version} ({kind}, {p.distribution}: {p.module})")
        for label, names in (("generators", p.generators), ("stages", p.stages), ("models", p.models), ("manifest tables", p.tables), ("executors", p.executors), ("extractors", p.extractors), ("classifiers", p.classifiers), ("tasks", p.tasks), ("probes", p.probes), ("report sections", p.report_sections)):
            if names:
                click.echo(f"  {label}: {', '.join(names)}")
    for f in reg.failures:
        click.echo(f"FAILED: {f.line()}")
    click.echo(f"(third-party plugins load only when named in {ALLOWLIST_ENV} or a manifest's `plugins`)")


@main.command()
@click.argument("output", type=LocalPath(file_okay=False))
@click.argument("key")
@click.option("--out", "-o", type=click.Path(dir_okay=False, path_type=Path), help="Where to write the image (default: KEY.png here).")
def regenerate(output: Path, key: str, out: Path | None):
    """Rebuild sample KEY of OUTPUT from its record alone (latent, condition, seed); checks it is byte-identical."""
    from .regenerate import regenerate as run_regenerate

    r = run_regenerate(output, key, out)
    click.echo(f"regenerated {r['key']} (from {r['shard']}) into {r['written']}: byte-identical to the shard's image")


@main.command()
@click.argument("output", type=LocalPath(file_okay=False))
@click.option("--to", "to", required=True, type=click.Choice(["coco", "cvat", "label-studio"]), help="The annotation tool's import format.")
@click.option("--out", "-o", "out", required=True, type=click.Path(file_okay=False, path_type=Path), help="A new folder for images/ and the tool's file.")
@click.option("--pick", type=click.IntRange(min=1), help="Only the K most varied samples (greedy k-center); default: all.")
@click.option("--extractor", help="Pick in this extractor's space (a name or an inline table); default: a model-free colour layout.")
def export(output: Path, to: str, out: Path, pick: int | None, extractor: str | None):
    """Write OUTPUT's images (or the --pick most varied) for an annotation tool, with its import file."""
    from .export import describe
    from .export import export as run_export

    click.echo(describe(run_export(output, to, out, pick, extractor), to))


@main.command()
@click.argument("path", type=LocalPath())
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--samples", "-n", default=3, show_default=True, help="How many samples' metadata to show.")
def inspect(path: Path, as_json: bool, samples: int):
    """Summarise a shard or an output folder: counts, fields, classes, a few samples."""
    from .inspect import format_report, inspect_path

    report = inspect_path(path, samples)
    click.echo(json.dumps(report, indent=2) if as_json else format_report(report))


@main.command()
@click.argument("path", type=LocalPath())
@click.option("--out", "-o", "out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="PNG to write.")
@click.option("--count", "-n", default=64, show_default=True, type=click.IntRange(min=1), help="How many samples.")
@click.option("--columns", default=8, show_default=True, type=click.IntRange(min=1))
@click.option("--cell", default=128, show_default=True, type=click.IntRange(min=8, max=2048), help="Cell size in pixels.")
@click.option("--style", type=click.Choice(["side", "overlay"]), default="side", show_default=True, help="Labels beside each image (with a legend) or blended over it.")
@click.option("--groups/--no-groups", default=None, help="One row per group (a parent and its views, interpolations, edits); default: when samples have groups.")
def preview(path: Path, out: Path, count: int, columns: int, cell: int, style: str, groups: bool | None):
    """Contact sheet of samples: with labels, each image beside its label map and a class legend;
    a parent and its children (views, interpolations, edits) in one row."""
    from .inspect import contact_sheet

    n = contact_sheet(path, out, count=count, columns=columns, cell=cell, style=style, by_group=groups)
    click.echo(f"wrote {out} ({n} samples)")


def _add_plugin_commands() -> None:
    """Commands from plugins (register_commands hook), e.g. `synth fit` from the diffusers plugin.

    A plugin that fails here (or fails to load) never breaks the command line: its failure is
    listed under --help and by `synth plugins`, and commands that need it stop with one line."""
    from .plugins import PluginFailure, load_registry, one_line

    registry = load_registry()
    for impl in registry.plugin_manager.hook.register_commands.get_hookimpls():
        try:
            impl.function(cli=main)
        except Exception as e:
            registry.failures.append(PluginFailure(impl.plugin_name, "its register_commands hook", f"failed in register_commands: {one_line(e)}"))
    SynthGroup.plugin_failures = list(registry.failures)


_add_plugin_commands()

if __name__ == "__main__":
    main()
