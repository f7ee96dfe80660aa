"""File steps: stat, read, checksum, copy and compress files inside the data directory."""
import gzip
import hashlib
import shutil
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from django.conf import settings
from pydantic import AfterValidator, Field

from chains.steps.base import Params, StepFailed
from chains.steps.context import StepContext
from chains.steps.files import destination_problem, open_output, readable, writable
from chains.steps.paths import DataPath
from chains.steps.registry import step

CHUNK = 64 * 1024


class FileParams(Params):
    path: DataPath = Field(description="A file relative to the data directory.")


class ReadParams(FileParams):
    max_bytes: int = Field(4096, ge=1, le=settings.CHAINS_MAX_READ_BYTES)


class ChecksumParams(FileParams):
    algorithm: Literal["sha256", "sha1", "md5"] = "sha256"


def _in_writable_area(value: str | None) -> str | None:
    if value is not None and (problem := destination_problem(value)):
        raise ValueError(problem)
    return value


class CopyParams(FileParams):
    destination: Annotated[DataPath | None, AfterValidator(_in_writable_area)] = Field(
        None, description="Where to copy to, inside a writable area (CHAINS_WRITABLE_DIRS); "
        "by default a file under runs/<run id>/."
    )


def _source(path: str, context: StepContext):
    source = readable(context, path)
    size = source.stat().st_size
    if size > settings.CHAINS_MAX_FILE_BYTES:
        raise StepFailed(f"file {path!r} is {size} bytes, over the limit")
    return source


def stat_file(params: FileParams, previous: Any, context: StepContext) -> dict:
    info = readable(context, params.path).stat()
    modified = datetime.fromtimestamp(info.st_mtime, tz=UTC).isoformat()
    return {"operation": "stat", "file": params.path, "size": info.st_size, "modified": modified}


def read_file(params: ReadParams, previous: Any, context: StepContext) -> dict:
    with _source(params.path, context).open("rb") as handle:
        data = handle.read(params.max_bytes + 1)
    return {
        "operation": "read",
        "file": params.path,
        "content": data[: params.max_bytes].decode("utf-8", errors="replace"),
        "truncated": len(data) > params.max_bytes,
    }


def checksum_file(params: ChecksumParams, previous: Any, context: StepContext) -> dict:
    digest = hashlib.new(params.algorithm)
    with _source(params.path, context).open("rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return {
        "operation": "checksum",
        "file": params.path,
        "algorithm": params.algorithm,
        "checksum": digest.hexdigest(),
    }


def copy_file(params: CopyParams, previous: Any, context: StepContext) -> dict:
    source = _source(params.path, context)
    if params.destination:
        target = writable(context, params.destination)
    else:
        target = context.output_path(source.name)
    with source.open("rb") as src, open_output(context, target) as dst:
        shutil.copyfileobj(src, dst, CHUNK)
    return {"operation": "copy", "file": params.path, "copy": context.relative(target)}


def compress_file(params: FileParams, previous: Any, context: StepContext) -> dict:
    source = _source(params.path, context)
    target = context.output_path(source.name + ".gz")
    with (source.open("rb") as src, open_output(context, target) as raw,
          gzip.GzipFile(fileobj=raw, mode="wb") as dst):
        shutil.copyfileobj(src, dst, CHUNK)
    return {
        "operation": "compress",
        "file": params.path,
        "compressed": context.relative(target),
        "size": source.stat().st_size,
        "compressed_size": target.stat().st_size,
    }


step("io.stat", params=FileParams, description="Size and modification time of a file.")(
    stat_file)
step("io.read", params=ReadParams, description="The first bytes of a file, as text.")(read_file)
step("io.checksum", params=ChecksumParams, description="A file's checksum.")(checksum_file)
step("io.copy", params=CopyParams, description="Copy a file inside the data directory.")(
    copy_file)
step("io.compress", params=FileParams, description="Gzip a file into runs/<run id>/.")(
    compress_file)
