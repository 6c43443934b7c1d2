"""Errors whose message is written for the user: what was wrong and what to do."""


class ConfigError(ValueError):
    """A config file or command line that cannot describe a run."""


class MissingComponentError(RuntimeError):
    """A package, library or program the project needs and cannot find. The message is one line that names it
    and the command that installs it; entry points print it instead of a traceback."""


__all__ = ["ConfigError", "MissingComponentError"]
