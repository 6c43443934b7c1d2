"""A results file as the app's Library view shows it (no Gradio here): the rows of one model, the table filtered
by genre and probability, and the genre counts for the chart."""

from __future__ import annotations

import os
from pathlib import Path

from .report import summarise
from .store import ResultsStore

ALL = "all"
NOT_MUSIC = "not music"
ERRORS = "errors"
TABLE_COLUMNS = ["file", "genre", "probability", "duration (s)", "music", "folder"]


class Library:
    """The rows of `results` for one model (`model_key`; default: the one with most rows), read once."""

    def __init__(self, results: str | os.PathLike, model_key: str | None = None):
        self.path = Path(results)
        with ResultsStore(self.path, readonly=True) as store:
            keys = store.model_keys()
            if model_key is None and keys:
                counts = {key: sum(1 for _ in store.rows(key)) for key in keys}
                model_key = max(counts, key=counts.get)
            self.model_key = model_key
            self.rows = [row for row in store.rows(model_key) if row["status"] != "not_audio"] if keys else []
        self.summary = summarise(self.rows)
        self.model_id = next((row["model_id"] for row in self.rows), None)

    def choices(self) -> list[str]:
        return [
            ALL,
            *self.summary["genres"],
            *([NOT_MUSIC] if self.summary["not_music"] else []),
            *([ERRORS] if self.summary["errors"] else []),
        ]

    def select(self, genre: str = ALL, min_probability: float = 0.0) -> list[dict]:
        """Rows of `genre` (or all / not music / errors) whose genre probability is at least `min_probability`,
        most confident first."""
        chosen = []
        for row in self.rows:
            if genre == ERRORS:
                if row["status"] == "error":
                    chosen.append(row)
                continue
            if row["status"] != "ok":
                continue
            not_music = row.get("is_music") is False
            if (
                genre == NOT_MUSIC
                and not not_music
                or genre not in (ALL, NOT_MUSIC)
                and (not_music or row["genre"] != genre)
            ):
                continue
            if (row["confidence"] or 0.0) >= min_probability:
                chosen.append(row)
        return sorted(chosen, key=lambda r: -(r["confidence"] or 0.0))

    @staticmethod
    def table(rows: list[dict]) -> list[list]:
        return [
            [
                Path(r["path"]).name,
                r["genre"] if r["status"] == "ok" else f"error: {r['error']}",
                None if r["confidence"] is None else round(r["confidence"], 3),
                None if r["duration"] is None else round(r["duration"], 1),
                {True: "yes", False: "no"}.get(r.get("is_music"), "-"),
                str(Path(r["path"]).parent),
            ]
            for r in rows
        ]

    def folders(self) -> list[str]:
        """The folders the songs are in, as few as cover them (what the app must be allowed to serve)."""
        parents = sorted({str(Path(r["path"]).parent) for r in self.rows})
        roots: list[str] = []
        for parent in parents:
            if not any(parent == root or parent.startswith(root.rstrip(os.sep) + os.sep) for root in roots):
                roots.append(parent)
        return roots


__all__ = ["ALL", "ERRORS", "Library", "NOT_MUSIC", "TABLE_COLUMNS"]
