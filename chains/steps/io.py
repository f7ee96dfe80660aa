"""File steps: stat, read, checksum, copy and compress files inside the data directory."""
import gzip
import hashlib
import shutil
from datetime import UTC, datetime
from typing import Any, Literal

from django.conf import settings
from pydantic import Field

from chains.steps.base import Params, StepContext, StepFailed, StepType
from chains.steps.paths import DataPath, data_file_for_step

CHUNK = 64 * 1024


class FileParams(Params):
    path: DataPath = Field(description="A file relative to the data directory.")


class ReadParams(FileParams):
    max_bytes: int = Field(4096, ge=1, le=settings.CHAINS_MAX_READ_BYTES)


class ChecksumParams(FileParams):
    algorithm: Literal["sha256", "sha1", "md5"] = "sha256"


class CopyParams(FileParams):
    destination: DataPath | None = Field(
        None, description="Where to copy to; by default a file under runs/<run id>/."
    )


def _source(path: str):
    source = data_file_for_step(path)
    size = source.stat().st_size
    if size > settings.CHAINS_MAX_FILE_BYTES:
        raise StepFailed(f"file {path!r} is {size} bytes, over the limit")
    return source


def stat_file(params: FileParams, previous: Any, context: StepContext) -> dict:
    info = data_file_for_step(params.path).stat()
    modified = datetime.fromtimestamp(info.st_mtime, tz=UTC).isoformat()
    return {"operation": "stat", "file": params.path, "size": info.st_size, "modified": modified}


def read_file(params: ReadParams, previous: Any, context: StepContext) -> dict:
    with _source(params.path).open("rb") as handle:
        data = handle.read(params.max_bytes + 1)
    return {
        "operation": "read",
        "file": params.path,
        "content": data[: params.max_bytes].decode("utf-8", errors="replace"),
        "truncated": len(data) > params.max_bytes,
    }


def checksum_file(params: ChecksumParams, previous: Any, context: StepContext) -> dict:
    digest = hashlib.new(params.algorithm)
    with _source(params.path).open("rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return {
        "operation": "checksum",
        "file": params.path,
        "algorithm": params.algorithm,
        "checksum": digest.hexdigest(),
    }


def copy_file(params: CopyParams, previous: Any, context: StepContext) -> dict:
    source = _source(params.path)
    if params.destination:
        target = data_file_for_step(params.destination, must_exist=False)
        target.parent.mkdir(parents=True, exist_ok=True)
    else:
        target = context.output_path(source.name)
    shutil.copyfile(source, target)
    return {"operation": "copy", "file": params.path, "copy": context.relative(target)}


def compress_file(params: FileParams, previous: Any, context: StepContext) -> dict:
    source = _source(params.path)
    target = context.output_path(source.name + ".gz")
    with source.open("rb") as src, gzip.open(target, "wb") as dst:
        shutil.copyfileobj(src, dst, CHUNK)
    return {
        "operation": "compress",
        "file": params.path,
        "compressed": context.relative(target),
        "size": source.stat().st_size,
        "compressed_size": target.stat().st_size,
    }


stat = StepType("io.stat", "Size and modification time of a file.", FileParams, stat_file)
read = StepType("io.read", "The first bytes of a file, as text.", ReadParams, read_file)
checksum = StepType("io.checksum", "A file's checksum.", ChecksumParams, checksum_file)
copy = StepType("io.copy", "Copy a file inside the data directory.", CopyParams, copy_file)
compress = StepType("io.compress", "Gzip a file into runs/<run id>/.", FileParams, compress_file)
