"""The package version, in one place (read by ``pyproject.toml`` and the User-Agent)."""

__version__ = "0.2.0"
