"""Argument types shared by the core's commands and those plugins add (register_commands)."""

from __future__ import annotations

import click

from .errors import UsageError


class LocalPath(click.ParamType):
    """A local path or a file:// URL (what `synth run` accepts as an output), which must exist."""

    name = "path"

    def __init__(self, file_okay: bool = True):
        self.file_okay = file_okay

    def convert(self, value, param, ctx):
        from .reading import local_folder

        try:
            path = local_folder(value)
        except UsageError as e:
            self.fail(str(e), param, ctx)
        if not path.exists():
            self.fail(f"{path} does not exist", param, ctx)
        if not self.file_okay and not path.is_dir():
            self.fail(f"{path} is a file, not an output folder", param, ctx)
        return path


class ThreadsParam(click.ParamType):
    """--threads: a count of at least 1, or "auto"."""

    name = "threads"

    def convert(self, value, param, ctx):
        from .threads import check_threads

        try:
            return check_threads(int(value) if isinstance(value, str) and value.strip().isdigit() else value)
        except ValueError:
            self.fail(f"{value!r} is neither a count of at least 1 nor 'auto'", param, ctx)


THREADS = ThreadsParam()
