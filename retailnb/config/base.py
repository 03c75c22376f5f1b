"""The base of every parameter model: strict types, no unknown keys, immutable.

Strict mode is the point: YAML gives each value a type (``false`` is a bool, ``"false"`` a string,
``2.5`` a float), and a model field accepts only its own type (an int is accepted where a float is
expected, nothing else is converted). Constrained number types name the ranges once.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field


class Spec(BaseModel):
    """A frozen, strictly typed model that rejects unknown keys."""

    model_config = ConfigDict(strict=True, frozen=True, extra="forbid", allow_inf_nan=False)


PositiveInt = Annotated[int, Field(ge=1)]
"""An integer >= 1 (epochs, dims, counts that must not be empty)."""

NonNegativeInt = Annotated[int, Field(ge=0)]
"""An integer >= 0."""

PositiveFloat = Annotated[float, Field(gt=0.0)]
"""A finite number > 0 (learning rates, temperatures)."""

NonNegativeFloat = Annotated[float, Field(ge=0.0)]
"""A finite number >= 0 (weights, decays, degrees)."""

Probability = Annotated[float, Field(ge=0.0, le=1.0)]
"""A number in [0, 1]."""

BatchSize = Annotated[int, Field(ge=2)]
"""Images per batch: contrastive losses and batch norm need at least two."""
