"""Errors whose message is written for the user: what was wrong and what to do."""


class ConfigError(ValueError):
    """A config file or command line that cannot describe a run."""


__all__ = ["ConfigError"]
