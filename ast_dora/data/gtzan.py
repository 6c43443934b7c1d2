"""GTZAN facts shared by the data modules: genre names, track-id conventions, where the split lists live."""

from __future__ import annotations

import re
from pathlib import Path

# GTZAN's ten genres in alphabetical order: label id i is GTZAN_GENRES[i].
GTZAN_GENRES: tuple[str, ...] = (
    "blues",
    "classical",
    "country",
    "disco",
    "hiphop",
    "jazz",
    "metal",
    "pop",
    "reggae",
    "rock",
)

# Audio containers accepted in a local folder (all decoded by FFmpeg, through PyAV).
AUDIO_EXTENSIONS: tuple[str, ...] = (".wav", ".au", ".flac", ".mp3", ".ogg", ".opus", ".m4a", ".aiff", ".aif")

_TRACK_ID = re.compile(r"^(?P<genre>[a-z]+)\.(?P<index>\d{5})$")

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_SPLIT_LISTS_DIR = REPO_ROOT / "data" / "gtzan_splits"
# A packaged copy (pyproject's package-data `ast_dora/data_files/*.txt`) is used when the repo's is absent.
PACKAGED_SPLIT_LISTS_DIR = Path(__file__).resolve().parents[1] / "data_files"


def track_id_from_name(name: str) -> str:
    """`'blues/blues.00012.wav'`, `'/x/blues.00012.au'` or `'blues.00012'` -> `'blues.00012'` (the file stem)."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    stem, dot, ext = base.rpartition(".")
    if dot and not _TRACK_ID.match(base) and ext and not ext.isdigit():
        return stem
    return base


def parse_track_id(track_id: str) -> tuple[str, int] | None:
    """`'blues.00012'` -> `('blues', 12)`; None when the id is not in GTZAN's `<genre>.NNNNN` form."""
    match = _TRACK_ID.match(track_id)
    if match is None:
        return None
    return match["genre"], int(match["index"])


def resolve_split_lists_dir(path: str | None) -> Path:
    """The folder holding `{train,valid,test}_{filtered,stratified}.txt`, with a clear error if it is missing."""
    if path is not None:
        candidates = [Path(path)]
    else:
        candidates = [DEFAULT_SPLIT_LISTS_DIR, PACKAGED_SPLIT_LISTS_DIR]
    for candidate in candidates:
        if (candidate / "train_filtered.txt").is_file():
            return candidate
    tried = ", ".join(str(c) for c in candidates)
    raise FileNotFoundError(
        f"GTZAN split lists not found (looked for train_filtered.txt in: {tried}). They ship with the repository "
        "in data/gtzan_splits/ (Kereliuk, Sturm & Larsen 2015; see data/README.md); pass --split_lists_dir "
        "pointing at a folder with {train,valid,test}_filtered.txt and {train,valid,test}_stratified.txt."
    )
