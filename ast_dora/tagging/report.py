"""What a tagging run tells its user: counts per genre, not music, errors (`summarise`, `format_summary`) and the
bar chart of the genre counts (`save_genre_chart`); the app's Library view reads the same counts."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable
from pathlib import Path


def summarise(rows: Iterable[dict]) -> dict:
    """Counts over results rows: `genres` (music songs per genre, most first), `not_music`, `errors`, `not_audio`,
    `songs` (analysed, music or not) and the seconds of audio."""
    genres, counts, audio_seconds = Counter(), Counter(), 0.0
    for row in rows:
        counts[row["status"]] += 1
        if row["status"] != "ok":
            continue
        audio_seconds += row.get("duration") or 0.0
        if row.get("is_music") is False:
            counts["not_music"] += 1
        else:
            genres[row["genre"]] += 1
    return {
        "songs": counts["ok"],
        "genres": dict(sorted(genres.items(), key=lambda item: (-item[1], item[0]))),
        "not_music": counts["not_music"],
        "errors": counts["error"],
        "not_audio": counts["not_audio"],
        "audio_hours": audio_seconds / 3600,
    }


def format_summary(summary: dict) -> str:
    lines = [
        f"{summary['songs']} songs ({summary['audio_hours']:.1f} h of audio): "
        f"{summary['songs'] - summary['not_music']} music, {summary['not_music']} not music; "
        f"{summary['errors']} errors; {summary['not_audio']} other files skipped (not audio)"
    ]
    width = max((len(g) for g in summary["genres"]), default=5)
    total = max(sum(summary["genres"].values()), 1)
    for genre, count in summary["genres"].items():
        lines.append(f"  {genre.ljust(width)}  {count:6d}  {count / total:6.1%}")
    return "\n".join(lines)


def genre_figure(summary: dict, title: str | None = None):
    """A matplotlib bar chart of the songs per genre (and the not-music count, in grey)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    names = list(summary["genres"]) + (["not music"] if summary["not_music"] else [])
    counts = list(summary["genres"].values()) + ([summary["not_music"]] if summary["not_music"] else [])
    figure, axis = plt.subplots(figsize=(max(5.0, 0.7 * len(names) + 2), 3.6), layout="constrained")
    colours = ["tab:blue"] * len(summary["genres"]) + (["tab:gray"] if summary["not_music"] else [])
    bars = axis.bar(names, counts, color=colours)
    axis.bar_label(bars, fontsize=8)
    axis.set_ylabel("songs")
    axis.set_title(title or f"{summary['songs']} songs by genre")
    axis.tick_params(axis="x", rotation=45)
    return figure


def save_genre_chart(summary: dict, path: str | os.PathLike, title: str | None = None) -> Path:
    import matplotlib.pyplot as plt

    figure = genre_figure(summary, title)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


__all__ = ["format_summary", "genre_figure", "save_genre_chart", "summarise"]
