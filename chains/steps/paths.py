"""Every path a step touches is resolved inside the data directory, or refused."""
import re
from pathlib import Path, PurePosixPath
from typing import Annotated

from django.conf import settings
from pydantic import AfterValidator

from chains.steps.base import StepFailed

PERCENT_ENCODED = re.compile(r"%[0-9A-Fa-f]{2}")


def data_dir() -> Path:
    return Path(settings.CHAINS_DATA_DIR).resolve()


def check_relative_path(value: str) -> str:
    """Syntactic checks, usable when a chain is defined: relative, no `..`, no NUL."""
    if not value.strip():
        raise ValueError("must be a non-empty path relative to the data directory")
    if "\x00" in value:
        raise ValueError("must not contain a NUL byte")
    if "\\" in value:
        raise ValueError("must use '/' as separator")
    if PERCENT_ENCODED.search(value):
        raise ValueError("must not be percent-encoded")
    pure = PurePosixPath(value)
    if pure.is_absolute():
        raise ValueError("must be relative to the data directory, not absolute")
    if ".." in pure.parts:
        raise ValueError("must not contain '..'")
    return str(pure)


def resolve_data_path(value: str, *, must_exist: bool = True) -> Path:
    """The real path of `value` inside the data directory (ValueError says why not).
    Symlinks are followed and must stay inside."""
    root = data_dir()
    resolved = (root / check_relative_path(value)).resolve()
    if not resolved.is_relative_to(root):
        raise ValueError("leads outside the data directory")
    if must_exist and not resolved.is_file():
        raise ValueError("is not an existing file in the data directory")
    return resolved


def existing_data_file(value: str) -> str:
    resolve_data_path(value, must_exist=True)
    return value


def data_file_for_step(value: str, *, must_exist: bool = True) -> Path:
    """resolve_data_path for a running step: a refusal fails the step."""
    try:
        return resolve_data_path(value, must_exist=must_exist)
    except ValueError as exc:
        raise StepFailed(f"path {value!r} {exc}") from exc


# A step param naming a file; existence is checked when the step runs.
DataPath = Annotated[str, AfterValidator(check_relative_path)]
# A file that must exist already (seed task types check this at submit time).
ExistingDataFile = Annotated[str, AfterValidator(existing_data_file)]
