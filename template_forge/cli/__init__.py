"""The ``tforge`` command line (``template_forge.cli:main``; ``python -m template_forge.cli``)."""

from template_forge.cli.main import main

__all__ = ["main"]
