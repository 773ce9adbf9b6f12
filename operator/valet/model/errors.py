"""The model's error tree.

ValetError
 └── SpecError          a resource spec failed to parse; names the field path
"""

from __future__ import annotations


class ValetError(Exception):
    """Base of every error valet raises on purpose."""


class SpecError(ValetError):
    """A manifest field is missing or malformed; ``field`` is its dotted path."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem
