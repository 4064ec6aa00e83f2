"""The one progress bar of gmlib: plain text on stdout.

Notebook widgets would pull JavaScript from a CDN into the built book, and
nbgrader counts anything written to stderr in a graded cell as a failure, so
every loop in gmlib (training epochs, EM iterations) shows this bar instead.
"""
from __future__ import annotations

import sys

from tqdm.std import tqdm

__all__ = ["progress_bar"]


def progress_bar(n: int, desc: str | None, enabled: bool) -> tqdm:
    """A text bar over ``range(n)`` on stdout; silent unless ``enabled``."""
    return tqdm(
        range(n), desc=desc, disable=not enabled, file=sys.stdout, ncols=88,
        mininterval=0.5, ascii=True, leave=True,
    )
