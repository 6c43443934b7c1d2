"""The genre written into each song's own tag, safely, with `mutagen` (`--write_tags`, `--dry_run`, `--undo`).

Where players read the genre: ID3 `TCON` in mp3, the Vorbis comment `GENRE` in ogg (vorbis), opus and flac, the MP4
atom `\xa9gen` in m4a / mp4. Formats with no tag of this kind (wav, au, aiff, ...) are listed, never converted.

Safety: each file is copied to a temporary file beside it, the copy's tag is rewritten (mutagen rewrites only the
tag blocks: the audio frames are copied byte for byte), and the copy replaces the file with `os.replace`, one atomic
rename: a failure or a kill at any point leaves the file either as it was or fully written (at worst a stray
`.*.tagtmp` file, removed on the next run). Before the rename, a JSON line with the old values goes to the undo log
(appended, flushed and fsynced), so `--undo LOG` can always put back what was there, newest change first.
Songs the music check calls "not music", and songs whose tag already holds the genre, are left alone.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

from ..errors import MissingComponentError

MUTAGEN_MISSING = "mutagen is not installed (it writes the genre tags): pip install mutagen"
TEMP_SUFFIX = ".tagtmp"


def _mutagen():
    try:
        import mutagen
    except ModuleNotFoundError:
        raise MissingComponentError(MUTAGEN_MISSING) from None
    return mutagen


class UnsupportedFormat(Exception):
    """A file whose format holds no genre tag this module writes (wav, au, ...)."""


def tag_kind(path: str | os.PathLike) -> str:
    """ "id3", "vorbis" or "mp4" for a file mutagen recognises by content; `UnsupportedFormat` otherwise."""
    _mutagen()
    import mutagen
    from mutagen.flac import FLAC
    from mutagen.mp3 import MP3
    from mutagen.mp4 import MP4
    from mutagen.oggopus import OggOpus
    from mutagen.oggvorbis import OggVorbis

    try:
        audio = mutagen.File(path)
    except mutagen.MutagenError as error:
        raise UnsupportedFormat(f"mutagen cannot read it ({error})") from None
    if isinstance(audio, MP3):
        return "id3"
    if isinstance(audio, (FLAC, OggVorbis, OggOpus)):
        return "vorbis"
    if isinstance(audio, MP4):
        return "mp4"
    name = type(audio).__name__ if audio is not None else Path(path).suffix or "this format"
    raise UnsupportedFormat(f"{name} files hold no genre tag written here (mp3, ogg, opus, flac and m4a are)")


def read_genre(path: str | os.PathLike) -> list[str] | None:
    """The file's genre values (None: no genre tag at all)."""
    kind = tag_kind(path)
    import mutagen

    if kind == "id3":
        from mutagen.id3 import ID3, ID3NoHeaderError

        try:
            frames = ID3(path).getall("TCON")
        except ID3NoHeaderError:
            return None
        return [str(v) for frame in frames for v in frame.text] if frames else None
    audio = mutagen.File(path)
    key = "\xa9gen" if kind == "mp4" else "genre"
    if audio.tags is None or key not in audio.tags:
        return None
    return [str(v) for v in audio.tags[key]]


def _set_genre(path: str, kind: str, values: list[str] | None) -> None:
    """Set (or with None remove) the genre of the file at `path`, in place (callers pass the temporary copy)."""
    import mutagen

    if kind == "id3":
        from mutagen.id3 import ID3, TCON, ID3NoHeaderError

        try:
            tags = ID3(path)
        except ID3NoHeaderError:
            tags = ID3()
        tags.delall("TCON")
        if values is not None:
            tags.add(TCON(encoding=3, text=list(values)))
        tags.save(path)
        return
    audio = mutagen.File(path)
    if audio.tags is None:
        audio.add_tags()
    key = "\xa9gen" if kind == "mp4" else "genre"
    if values is None:
        if key in audio.tags:
            del audio.tags[key]
    else:
        audio.tags[key] = list(values)
    audio.save()


def replace_genre(
    path: str | os.PathLike, values: list[str] | None, log=None, record: dict | None = None
) -> None:
    """Write `values` (None: remove the genre) through a temporary copy and an atomic rename; `record` goes to
    `log` (an open file) and is fsynced before the rename."""
    path = str(path)
    kind = tag_kind(path)
    folder = os.path.dirname(path) or "."
    handle, temporary = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=TEMP_SUFFIX, dir=folder)
    os.close(handle)
    try:
        shutil.copy2(path, temporary)  # content, permissions and times
        _set_genre(temporary, kind, values)
        with open(temporary, "rb+") as f:
            os.fsync(f.fileno())
        if log is not None and record is not None:
            log.write(json.dumps(record, ensure_ascii=False) + "\n")
            log.flush()
            os.fsync(log.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


def genre_value(row: dict) -> str:
    """The text written: the model's genre label as it is (e.g. "rock", "hiphop")."""
    return row["genre"]


def write_genre_tags(
    rows: Iterable[dict], log_path: str | os.PathLike, dry_run: bool = False, store=None, out=None
) -> int:
    """Write the genre of every analysed music song of `rows` into its file; 1 if some could not be written."""
    _mutagen()
    out = out or sys.stdout
    written, same, no_format, failed, not_music = 0, 0, [], 0, 0
    log = None if dry_run else open(log_path, "a", encoding="utf-8")
    try:
        for row in rows:
            if row["status"] != "ok":
                continue
            if row.get("is_music") is False:
                not_music += 1
                continue
            path, genre = row["path"], genre_value(row)
            try:
                old = read_genre(path)
            except UnsupportedFormat as error:
                no_format.append((path, str(error)))
                continue
            except Exception as error:
                failed += 1
                print(
                    f"error: {path}: cannot read its tags ({type(error).__name__}: {error})", file=sys.stderr
                )
                continue
            if old == [genre]:
                same += 1
                continue
            if dry_run:
                print(f"would tag {path}: genre {old!r} -> {[genre]!r}", file=out)
                written += 1
                continue
            record = {"path": path, "old": old, "new": [genre], "time": time.time()}
            try:
                replace_genre(path, [genre], log=log, record=record)
            except Exception as error:
                failed += 1
                print(
                    f"error: {path}: tag not written, file unchanged ({type(error).__name__}: {error})",
                    file=sys.stderr,
                )
                continue
            written += 1
            if store is not None:  # only the tag changed: a rerun must not analyse the file again
                info = os.stat(path)
                store.update_stat(path, row["model_key"], info.st_size, info.st_mtime)
    finally:
        if log is not None:
            log.close()
    for path, reason in no_format:
        print(f"not tagged: {path}: {reason}", file=out)
    verb = "would write" if dry_run else "wrote"
    print(
        f"tags: {verb} {written}, {same} already had their genre, {len(no_format)} in formats without a genre "
        f"tag (listed), {not_music} not music (left alone), {failed} failed"
        + ("" if dry_run else f"; undo log {log_path}"),
        file=out,
    )
    return 1 if failed else 0


def undo_log(log_path: str | os.PathLike, out=None) -> int:
    """Put back the old genre of every change in the log, newest first (a file changed twice gets its first
    value back); a file changed since (its genre is no longer what was written) is left alone and reported."""
    _mutagen()
    out = out or sys.stdout
    path = Path(log_path)
    if not path.is_file():
        print(
            f"error: {path}: no such undo log (a --write_tags run writes RESULTS.tags.jsonl).",
            file=sys.stderr,
        )
        return 2
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    restored, skipped, failed = 0, 0, 0
    for record in reversed(records):
        try:
            current = read_genre(record["path"])
            if current == record["old"]:
                continue  # already as it was (undone before, or the log's write never reached the file)
            if current != record["new"]:
                skipped += 1
                print(
                    f"skipped {record['path']}: its genre is now {current!r}, not the {record['new']!r} "
                    "written; left alone",
                    file=out,
                )
                continue
            replace_genre(record["path"], record["old"])
            restored += 1
        except Exception as error:
            failed += 1
            print(f"error: {record['path']}: not restored ({type(error).__name__}: {error})", file=sys.stderr)
    print(f"undo: restored {restored} files, {skipped} changed since (left alone), {failed} failed", file=out)
    return 1 if failed else 0


__all__ = ["UnsupportedFormat", "read_genre", "replace_genre", "tag_kind", "undo_log", "write_genre_tags"]
