"""User-facing errors: one line, an exit code, no traceback unless --debug."""


class SynthError(Exception):
    """An error the user can act on. The message is printed as-is, on one line."""

    exit_code = 1


class UsageError(SynthError):
    """Bad manifest, bad flag, unknown plugin: the input is wrong (exit 2)."""

    exit_code = 2


class ManifestError(UsageError):
    """One or more problems in a manifest; all are listed at once."""

    def __init__(self, path, problems):
        self.path = str(path)
        self.problems = list(problems)
        if len(self.problems) == 1:
            text = f"{self.path}: {self.problems[0]}"
        else:
            lines = "\n".join(f"  {p}" for p in self.problems)
            text = f"{self.path}: {len(self.problems)} problems\n{lines}"
        super().__init__(text)


class RunError(SynthError):
    """Something failed while running (a stage raised, disk full): exit 1."""

    exit_code = 1
