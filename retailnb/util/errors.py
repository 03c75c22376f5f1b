"""The project's one error shape for bad input files: the file, and what is wrong with it in words.

Every "this file is bad" error (an image, a checkpoint, a bundle) says which file and why in one
message, keeps both as attributes for callers that report many at once, and survives pickling, so an
error raised in a worker process reaches the caller intact.
"""

from __future__ import annotations

import os
from pathlib import Path


class FileProblem(ValueError):
    """A file is missing, unreadable or not what was expected; the message is ``"<path>: <problem>"``.

    Attributes:
        path: the offending file.
        problem: what is wrong with it, in words (without the path).
    """

    def __init__(self, path: str | os.PathLike[str], problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = Path(path)
        self.problem = problem

    def __reduce__(self) -> tuple[type[FileProblem], tuple[Path, str]]:
        # Exceptions are pickled from ``args``; rebuild from both fields so errors cross process pools.
        return (type(self), (self.path, self.problem))
