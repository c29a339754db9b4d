"""patchci: a patch CI for projects that take patches by mail."""

__version__ = "0.1.0"
