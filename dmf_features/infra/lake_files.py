"""Plain files kept beside the lake's tables (the nearest-item index, the alignment heads and manifest),
on a local folder or an object store alike."""

from __future__ import annotations

import uuid
from pathlib import Path

import pyarrow.fs as pafs


def filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    return pafs.FileSystem.from_uri(uri if "://" in uri else f"file://{uri}")


def publish_file(path: Path, destination: str) -> None:
    """Copy under a temporary name, then rename: a concurrent reader sees the old file or the new one,
    never half of one."""
    fs, target = filesystem(destination)
    fs.create_dir(target.rsplit("/", 1)[0], recursive=True)
    partial = f"{target}.partial-{uuid.uuid4().hex[:8]}"
    pafs.copy_files(str(path), partial, destination_filesystem=fs)
    fs.move(partial, target)


def read_bytes(uri: str) -> bytes | None:
    """The file's content; None when there is no such file."""
    fs, path = filesystem(uri)
    try:
        with fs.open_input_stream(path) as f:
            return f.read()
    except FileNotFoundError:
        return None


def copy_folder(uri: str, destination: Path) -> bool:
    """Copy the folder's files into `destination`; False when there is no such folder."""
    fs, path = filesystem(uri)
    if fs.get_file_info(path).type != pafs.FileType.Directory:
        return False
    pafs.copy_files(path, str(destination), source_filesystem=fs, destination_filesystem=pafs.LocalFileSystem())
    return True
