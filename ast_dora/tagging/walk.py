"""Finding the songs of a library: every file under the given folders, at any depth.

Which files are songs is decided by what PyAV can open (the decode workers try every file; `ast_dora.tagging.engine`),
not by extension alone: a song without an extension, or with a wrong one, is still found. The extension only
decides how a file PyAV cannot read is reported: a file named like audio (`AUDIO_EXTENSIONS`) is an error (a broken
download), anything else (covers, playlists, notes) is "not audio" and is skipped quietly.

Symlinks are followed; a link that leads back into a folder already being walked (a loop), a dangling link and a
folder that cannot be read are reported as `WalkProblem`s and never stop the walk.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

# Extensions of audio files people keep in libraries: a file so named that PyAV cannot read is reported as broken.
AUDIO_EXTENSIONS = frozenset(
    {
        ".mp3",
        ".flac",
        ".ogg",
        ".oga",
        ".opus",
        ".m4a",
        ".m4b",
        ".mp4",
        ".aac",
        ".alac",
        ".wav",
        ".wave",
        ".au",
        ".snd",
        ".aif",
        ".aiff",
        ".aifc",
        ".wma",
        ".ape",
        ".wv",
        ".mka",
        ".webm",
        ".mp2",
        ".mpc",
        ".tta",
        ".dsf",
    }
)


@dataclass(frozen=True)
class LibraryFile:
    path: str  # absolute, as reached (a symlinked folder's files keep the link's path)
    size: int
    mtime: float


@dataclass(frozen=True)
class WalkProblem:
    path: str
    reason: str  # one line for the user


def looks_like_audio(path: str) -> bool:
    return os.path.splitext(path)[1].lower() in AUDIO_EXTENSIONS


def walk_library(
    roots: Iterable[str | os.PathLike], exclude: Iterable[str | os.PathLike] = ()
) -> Iterator[LibraryFile | WalkProblem]:
    """Every regular file under `roots` (folders or single files), sorted by path within each folder, then the
    problems met on the way, as they are met. `exclude`: files never to list (the results file itself)."""
    excluded = {os.path.realpath(p) for p in exclude}
    seen_files: set[str] = set()
    for root in roots:
        root = os.path.abspath(os.fspath(root))
        try:
            info = os.stat(root)
        except OSError as error:
            yield WalkProblem(root, f"cannot read it ({error.strerror or error})")
            continue
        if stat.S_ISDIR(info.st_mode):
            yield from _walk_folder(root, excluded, seen_files)
        elif stat.S_ISREG(info.st_mode) and root not in seen_files and os.path.realpath(root) not in excluded:
            seen_files.add(root)
            yield LibraryFile(root, info.st_size, info.st_mtime)


def _walk_folder(root: str, excluded: set[str], seen_files: set[str]) -> Iterator[LibraryFile | WalkProblem]:
    # Depth first with an explicit stack; `ancestors` holds the (device, inode) of the folders on the current path,
    # so a symlink to one of them (a loop) is caught, while two links to the same outside folder are both walked.
    stack: list[tuple[str, tuple[tuple[int, int], ...]]] = [(root, ())]
    while stack:
        folder, ancestors = stack.pop()
        try:
            info = os.stat(folder)
        except OSError as error:
            yield WalkProblem(folder, f"cannot read the folder ({error.strerror or error})")
            continue
        key = (info.st_dev, info.st_ino)
        if key in ancestors:
            yield WalkProblem(folder, "symlink loop: it leads back to a folder above it; not followed")
            continue
        try:
            with os.scandir(folder) as scan:
                entries = sorted(scan, key=lambda e: e.name)
        except OSError as error:
            yield WalkProblem(folder, f"cannot read the folder ({error.strerror or error})")
            continue
        subfolders = []
        for entry in entries:
            try:
                entry_info = entry.stat(follow_symlinks=True)
            except OSError as error:
                reason = (
                    "dangling symlink"
                    if entry.is_symlink()
                    else f"cannot read it ({error.strerror or error})"
                )
                yield WalkProblem(entry.path, reason)
                continue
            if stat.S_ISDIR(entry_info.st_mode):
                subfolders.append(entry.path)
            elif stat.S_ISREG(entry_info.st_mode):
                if entry.path in seen_files or os.path.realpath(entry.path) in excluded:
                    continue
                seen_files.add(entry.path)
                yield LibraryFile(entry.path, entry_info.st_size, entry_info.st_mtime)
        for sub in reversed(subfolders):  # popped in name order
            stack.append((sub, (*ancestors, key)))


def under_roots(path: str, roots: Iterable[str | os.PathLike]) -> bool:
    """Whether `path` is one of `roots` or inside one of them (by path, as the walk reports paths)."""
    for root in roots:
        root = os.path.abspath(os.fspath(root))
        if path == root or path.startswith(root.rstrip(os.sep) + os.sep):
            return True
    return False


__all__ = [
    "AUDIO_EXTENSIONS",
    "LibraryFile",
    "WalkProblem",
    "looks_like_audio",
    "under_roots",
    "walk_library",
]
