from pathlib import Path

from synth.hookspecs import hookimpl

from .config import DiscoverConfig
from .probes import ImageProbe


@hookimpl
def register_tables(register):
    register("discover", DiscoverConfig)


@hookimpl
def register_probes(register):
    register(ImageProbe)


@hookimpl
def register_commands(cli):
    import click

    from synth.cli_types import THREADS

    @cli.command()
    @click.argument("manifest", type=click.Path(dir_okay=False, path_type=Path))
    @click.option("--out", "-o", type=click.Path(file_okay=False, path_type=Path), help="Folder of the page, strips and directions (default: <output>-discover).")
    @click.option("--quiet", "-q", is_flag=True)
    @click.option("--threads", type=THREADS)
    def discover(manifest, out, quiet, threads):
        """Find the directions in the generator's h-space that change a classifier's decision most ([discover] table)."""
        from .discover import discover as run_discover

        r = run_discover(manifest, out=out, quiet=quiet, threads=threads)
        top = r["directions"][0]
        click.echo(f"discover: {len(r['directions'])} directions for {r['target']!r}; first moves {top['moves']} "
                   f"(flip rate {top['flip_rate']:.2f}, mnac {top['mnac']:.2f}), saved as {top['name']}; {r['folder']}/discover.html")
