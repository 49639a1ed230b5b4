"""The package's version, where every layer may read it (the package root imports the library API)."""

__version__ = "0.1.0"  # as pyproject.toml says
