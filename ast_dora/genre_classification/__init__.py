"""The project's answer in the Hugging Face standard tools, usable without this project installed.

- `pipeline_genre_classification.py`: `GenreClassificationPipeline`, the `audio-classification` pipeline saved
  next to every model this project writes (config.json names it under `custom_pipelines`), so that
  `pipeline("audio-classification", model=..., trust_remote_code=True)` hears the whole song;
- `genre_classification.py` (+ README.md, its card): the `evaluate` metric, `evaluate.load(METRIC_PATH)`, behind
  every metric the project reports (training, search, `hub load --evaluate`, model cards);
- `song_windows.py`: windows and song-level aggregation, shared by both and by `ast_dora.inference`.

The three files import only numpy / torch / transformers (the pipeline) or evaluate / datasets / scikit-learn (the
metric) and each other, by relative import: they travel as they are (remote code, a metric Space). Nothing here
imports the rest of the project.
"""

from pathlib import Path

# `evaluate.load(METRIC_PATH)`: evaluate loads a local metric from a folder holding `<folder name>.py`.
METRIC_PATH = str(Path(__file__).resolve().parent)

__all__ = ["METRIC_PATH"]
