"""User-facing errors: the CLI prints their message (no traceback) and exits with status 2."""


class PaddleQAError(Exception):
    """An error the user can fix; the message says what is wrong and how to fix it."""


class DataError(PaddleQAError):
    """A data file that cannot be read or used at all (not a single bad record)."""

    def __init__(self, file: str, message: str, fix: str = "", record: str = ""):
        self.file = str(file)
        self.record = record
        self.fix = fix
        where = f"{self.file}" + (f", record {record}" if record else "")
        text = f"{where}: {message}"
        if fix:
            text += f" -- {fix}"
        super().__init__(text)


class ConfigError(PaddleQAError, ValueError):
    """A configuration value or key that is not valid."""
