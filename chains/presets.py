"""The seed task types (math_chain, data_chain, io_chain) as lists of step specs."""
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from django.conf import settings
from pydantic import BaseModel, ConfigDict, Field, StrictInt

from chains.errors import ChainError
from chains.steps.base import Number, validate
from chains.steps.math import OPERATIONS
from chains.steps.paths import ExistingDataFile


@dataclass(frozen=True)
class StepSpec:
    """A step as a run will execute it; what a Chain's Step rows become at start."""

    step_type: str
    params: dict[str, Any]
    stage: int
    name: str = ""
    max_retries: int = 0
    time_limit: int | None = None
    queue: str = ""
    map: bool = False
    when: dict[str, Any] | None = None
    retry_backoff: int | None = None
    retry_backoff_max: int = 600


@dataclass(frozen=True)
class Preset:
    specs: list[StepSpec]
    result_mode: str = "last_stage"
    inputs: dict[str, Any] = field(default_factory=dict)


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MathChainConfig(_Config):
    operation: Literal[OPERATIONS]  # type: ignore[valid-type]
    numbers: list[Number] = Field(min_length=1, max_length=settings.CHAINS_MAX_NUMBERS)
    iterations: StrictInt = Field(1, ge=1, le=settings.CHAINS_MAX_ITERATIONS)


class DataChainConfig(_Config):
    data_input: ExistingDataFile
    processing_steps: list[Literal["clean", "transform", "analyze"]] = Field(
        min_length=1, max_length=10
    )


class IoChainConfig(_Config):
    file_operations: list[Literal["stat", "read", "checksum", "copy", "compress"]] = Field(
        min_length=1, max_length=10
    )
    target_files: list[ExistingDataFile] = Field(min_length=1, max_length=100)


def math_chain(config: MathChainConfig) -> Preset:
    """Step 1 folds the operation over `numbers`; step j > 1 over [previous] + numbers."""
    return Preset(
        specs=[
            StepSpec(f"math.{config.operation}", {"numbers": config.numbers}, stage=i,
                     name=f"{config.operation} #{i + 1}")
            for i in range(config.iterations)
        ]
    )


def data_chain(config: DataChainConfig) -> Preset:
    """Load the CSV, then each processing step on the file the previous one wrote."""
    specs = [StepSpec("data.load", {"path": config.data_input}, stage=0, name="load")]
    specs += [
        StepSpec(f"data.{name}", {}, stage=i, name=name)
        for i, name in enumerate(config.processing_steps, start=1)
    ]
    return Preset(specs=specs)


def io_chain(config: IoChainConfig) -> Preset:
    """Each operation in order on each target file; the result lists every step's result."""
    pairs = [(path, op) for path in config.target_files for op in config.file_operations]
    if len(pairs) > settings.CHAINS_MAX_STEPS:
        raise ChainError(
            "too many steps",
            errors={"config.target_files": [
                f"{len(pairs)} file operations is over the limit of {settings.CHAINS_MAX_STEPS}"
            ]},
        )
    specs = [
        StepSpec(f"io.{op}", {"path": path}, stage=i, name=f"{op} {path}")
        for i, (path, op) in enumerate(pairs)
    ]
    return Preset(specs=specs, result_mode="all_steps")


PRESETS: dict[str, tuple[type[BaseModel], Callable[[Any], Preset]]] = {
    "math_chain": (MathChainConfig, math_chain),
    "data_chain": (DataChainConfig, data_chain),
    "io_chain": (IoChainConfig, io_chain),
}


def build_preset(task_type: str, config: Any) -> Preset:
    """Validated steps for a seed task type; ParamsInvalid names the `config.<field>`."""
    model, build = PRESETS[task_type]
    return build(validate(model, config, prefix="config"))
