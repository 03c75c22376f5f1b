"""The base of every parameter model: strict types, no unknown keys, immutable.

Strict mode is the point: YAML gives each value a type (``false`` is a bool, ``"false"`` a string,
``2.5`` a float), and a model field accepts only its own type (an int is accepted where a float is
expected, nothing else is converted). Constrained number types name the ranges once.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field


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

BatchSize = Annotated[int, Field(ge=2, le=8192)]
"""Images per batch: contrastive losses and batch norm need at least two; more than 8192 cannot be meant."""


def _as_list(value: Any) -> Any:
    """A single shot count is a list of one; a comma-separated string is an old spelling, said so."""
    if isinstance(value, str) and "," in value:
        raise ValueError("write shot counts as a YAML list, e.g. [1, 5, 10, all]")
    return value if isinstance(value, list) else [value]


OneOrList = BeforeValidator(_as_list)
"""Annotation for list fields that also take a single value (``shots: 5`` is ``[5]``)."""


def training_seed(value: str | int) -> int:
    """A training seed as a stage command passes it (``-p seed 2``, a string): a non-negative integer.

    Raises:
        ValueError: anything else, naming the parameter.
    """
    text = str(value).strip()
    if not text.isdigit():
        raise ValueError(f"seed: a training seed is a non-negative integer (an entry of evaluate.seeds), got {value!r}")
    return int(text)


def _distinct(seeds: list[int]) -> list[int]:
    if len(set(seeds)) != len(seeds):
        raise ValueError("every training seed must be different (a repeated seed repeats a run, not the experiment)")
    return seeds


TrainingSeeds = Annotated[list[NonNegativeInt], Field(min_length=1), AfterValidator(_distinct)]
"""The training seeds (``evaluate.seeds``): distinct non-negative integers, at least one."""
