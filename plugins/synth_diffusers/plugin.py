from synth.hookspecs import hookimpl

from .generator import DiffusersGenerator


@hookimpl
def register_generators(register):
    register(DiffusersGenerator)


@hookimpl
def register_tables(register):
    from .fit_config import FitConfig

    register("fit", FitConfig)


@hookimpl
def register_commands(cli):
    import click

    from synth.cli_types import THREADS

    @cli.command()
    @click.argument("manifest", type=click.Path(dir_okay=False, path_type=__import__("pathlib").Path))
    @click.option("--overwrite", is_flag=True, help="Discard checkpoints and start over.")
    @click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
    @click.option("--threads", type=THREADS, help="torch threads (a count or 'auto'; default: [fit] threads, else OMP_NUM_THREADS, else the cores).")
    def fit(manifest, overwrite, quiet, threads):
        """Train a diffusers UNet2DModel on MANIFEST's source images ([fit] table); resumes."""
        from .fit import run_fit

        info = run_fit(manifest, overwrite=overwrite, show_progress=not quiet, threads=threads)
        if info.get("nothing_to_do"):
            click.echo(f"nothing to do: {info['output']} already holds the model trained for {info['steps_done']} steps", err=True)
            return
        state = "finished" if info["finished"] else f"stopped at step {info['steps_done']} (max_minutes); rerun to continue"
        if info.get("resumed_from") is not None:
            state += f" (resumed from the checkpoint at step {info['resumed_from']})"
        click.echo(
            f"{state}: {info['steps_done']} steps, final loss {info['final_loss_mean_last_200']:.4f}, "
            f"{info['training_seconds']:.0f} s; pipeline in {info['output']}",
            err=True,
        )
        from .fit_recipe import trend_line
        from .fit_watch import verdict

        click.echo(trend_line(info.get("loss_trend")) + f" (samples: {info['output']}/samples.png)", err=True)
        watched = verdict(info.get("watch"))
        if watched:
            click.echo(watched, err=True)
