"""Model cards written from a training run's own records.

Every number in a card is read from what training wrote to `output_dir` (`all_results.json`, the per-class
`classification_report_*.json`, `trainer_state.json`, `train_results.json`, `run_config.yaml`, `data_summary.json`,
`config.json`, `adapter_config.json`), never typed, so a card cannot drift from its run. `ast_dora.hub` writes the
card as `README.md` into the upload folder, next to the confusion-matrix image it links.

    from ast_dora.model_card import RunRecords, build_model_card
    card = build_model_card(RunRecords.read("runs/ast_dora"), repo_id="me/gtzan-ast-dora", kind="adapter")
    card.save("README.md")
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from huggingface_hub import EvalResult, ModelCard, ModelCardData

from .backends import ONNX_SUBFOLDER
from .config import is_secret_key, public_config
from .data.gtzan import GTZAN_GENRES
from .evaluation import METRICS, SPLIT_PREFIXES
from .models import ModelSpec, spec_for_config
from .models.factory import ADAPTER_SUBFOLDER

# What the card's loading snippet pins: there is no commit to name before the card itself is committed, so the
# reader replaces this with the commit they reviewed (`python -m ast_dora.hub push` prints it after uploading).
REVISION_PLACEHOLDER = "COMMIT_SHA"
CARD_KINDS = ("model", "adapter")  # a full transformers model (ViT-hybrid, merged AST-DoRA) or a DoRA adapter
EVAL_PREFIXES = {
    prefix: split for split, prefix in SPLIT_PREFIXES.items()
}  # all_results.json prefix -> split
# (all_results key suffix, model-index metric type, display name, metric args), from evaluation.METRICS
CARD_METRICS = tuple(
    (name, metric.hub_type, metric.display_name, metric.hub_args) for name, metric in METRICS.items()
)
SPLIT_PROTOCOL_TEXT = {
    "stratified": "a seeded 8:1:1 train/validation/test split of each genre's tracks (`split_seed` {split_seed})",
    "folds": "fold {fold} of a {num_folds}-fold split of the tracks, stratified per genre (test = fold {fold}, "
    "validation = the next fold, `split_seed` {split_seed})",
    "fault_filtered": "Kereliuk, Sturm & Larsen's fault-filtered split (443 / 197 / 290 tracks): repeated, "
    "mislabelled and distorted clips removed and no artist in two splits",
    "kereliuk_stratified": "Kereliuk, Sturm & Larsen's 500 / 250 / 250 stratified lists",
    "predefined": "the dataset's own train / validation / test splits",
}
SPLIT_PROTOCOL_SHORT = {
    "stratified": "stratified split",
    "folds": "fold {fold} of {num_folds}",
    "fault_filtered": "fault-filtered split",
    "kereliuk_stratified": "Kereliuk stratified split",
    "predefined": "predefined split",
}
# Keys shown elsewhere in the card (data, model) or that do not change the trained model.
NOT_HYPERPARAMETERS = {
    "config",
    "output_dir",
    "overwrite_output_dir",
    "logging_steps",
    "logging_dir",
    "report_to",
    "push_to_hub",
    "push_merged",
    "hub_model_id",
    "hub_private_repo",
    "hub_revision",
    "hub_strategy",
    "dataloader_num_workers",
    "preprocessing_num_workers",
    "cache_features",
    "features_cache_dir",
    "cache_dir",
    "make_tiny_checkpoint",
    "dataset_name",
    "dataset_config_name",
    "data_dir",
    "synthetic",
    "synthetic_tracks_per_genre",
    "synthetic_duration_seconds",
    "synthetic_seed",
    "split",
    "num_folds",
    "fold",
    "split_seed",
    "split_lists_dir",
    "audio_column_name",
    "label_column_name",
    "model_type",
    "model_name_or_path",
    "model_revision",
    "search",
    "save_total_limit",
    "trust_remote_code",
    "eval_strategy",
    "save_strategy",
}


class RunRecordsError(FileNotFoundError):
    """An output_dir without the records a model card is built from."""


def _read_json(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


@dataclass
class RunRecords:
    """The files a finished `finetune/run.py` run left in `output_dir`, parsed."""

    output_dir: Path
    all_results: dict[str, Any]
    model_config: dict[str, Any]
    run_config: dict[str, Any] = field(default_factory=dict)
    data_summary: dict[str, Any] = field(default_factory=dict)
    trainer_state: dict[str, Any] = field(default_factory=dict)
    preprocessor_config: dict[str, Any] = field(default_factory=dict)
    adapter_config: dict[str, Any] | None = None
    reports: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)  # (prefix, level) -> report

    @classmethod
    def read(cls, output_dir: str | Path) -> RunRecords:
        output_dir = Path(output_dir)
        all_results = _read_json(output_dir / "all_results.json")
        model_config = _read_json(output_dir / "config.json")
        if all_results is None or model_config is None:
            missing = [
                name
                for name, found in (("all_results.json", all_results), ("config.json", model_config))
                if not found
            ]
            raise RunRecordsError(
                f"{output_dir} has no {' and no '.join(missing)}: give the output_dir of a finished training run "
                "(finetune/run.py writes the model and all_results.json there at the end)."
            )
        run_config = {}
        if (output_dir / "run_config.yaml").is_file():
            run_config = yaml.safe_load((output_dir / "run_config.yaml").read_text()) or {}
        reports = {}
        for prefix in EVAL_PREFIXES:
            for level in ("segment", "track"):
                report = _read_json(output_dir / f"classification_report_{prefix}_{level}.json")
                if report is not None:
                    reports[prefix, level] = report
        return cls(
            output_dir=output_dir,
            all_results=all_results,
            model_config=model_config,
            run_config=public_config(run_config),
            data_summary=_read_json(output_dir / "data_summary.json") or {},
            trainer_state=_read_json(output_dir / "trainer_state.json") or {},
            preprocessor_config=_read_json(output_dir / "preprocessor_config.json") or {},
            adapter_config=_read_json(output_dir / ADAPTER_SUBFOLDER / "adapter_config.json"),
            reports=reports,
        )

    @property
    def spec(self) -> ModelSpec:
        """The registered model, from the saved config (what was trained, whatever the YAML said)."""
        return spec_for_config(self.model_config)

    @property
    def model_type(self) -> str:
        return self.spec.name

    @property
    def windows(self) -> tuple[float, float]:
        """(window_seconds, hop_seconds) saved with the model; older runs: the data summary, then the defaults."""
        for source in (self.preprocessor_config, self.data_summary):
            if source.get("window_seconds"):
                return float(source["window_seconds"]), float(
                    source.get("hop_seconds") or source["window_seconds"]
                )
        return self.spec.default_windows

    @property
    def labels(self) -> list[str]:
        id2label = self.model_config.get("id2label", {})
        return [id2label[key] for key in sorted(id2label, key=int)]

    @property
    def gtzan_labels(self) -> bool:
        """Whether the run's labels are GTZAN's ten genres (else the data is the user's own)."""
        return self.labels == list(GTZAN_GENRES)

    @property
    def base_model(self) -> str | None:
        """The checkpoint a fine-tuned model started from (the adapter's `base_model_name_or_path`); None for a
        model trained from scratch."""
        if self.spec.default_checkpoint is None:
            return None
        if self.adapter_config and self.adapter_config.get("base_model_name_or_path"):
            return self.adapter_config["base_model_name_or_path"]
        return self.run_config.get("model_name_or_path")

    def metric(self, key: str) -> float | None:
        value = self.all_results.get(key)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            return None
        return value

    def confusion_matrix_file(self) -> str | None:
        """The confusion matrix the card shows: test at track level if the run has one (what users care about)."""
        for stem in ("test_track", "test_segment", "eval_track", "eval_segment"):
            if (self.output_dir / f"confusion_matrix_{stem}.png").is_file():
                return f"confusion_matrix_{stem}.png"
        return None


def looks_like_hub_id(name: str | None) -> bool:
    """`org/name` that is not a local path: only those belong in `base_model:` / `datasets:` metadata."""
    if not name or name.startswith((".", "/", "~")) or Path(name).exists():
        return False
    parts = name.split("/")
    return len(parts) == 2 and all(parts)


def dataset_description(records: RunRecords) -> dict[str, Any]:
    """Hub dataset id (for metadata, or None), display name with the split protocol, and the protocol text."""
    config = records.run_config
    protocol = records.data_summary.get("split") or config.get("split", "stratified")
    values = {
        "split_seed": config.get("split_seed", 42),
        "fold": config.get("fold", 0),
        "num_folds": config.get("num_folds", 10),
    }
    dataset_name = config.get("dataset_name")
    if config.get("synthetic"):
        hub_id, type_id, name = (
            None,
            "synthetic-gtzan",
            "Synthetic GTZAN-shaped music (ast_dora.data.synthetic)",
        )
    elif not records.gtzan_labels:
        # The user's own labels: a local folder or manifest, or a Hub dataset that is not GTZAN.
        hub_id = dataset_name if looks_like_hub_id(dataset_name) else None
        type_id = hub_id or "local"
        name = f"{hub_id or 'own data'} ({len(records.labels)} labels: {', '.join(records.labels)})"
    elif looks_like_hub_id(dataset_name):
        hub_id, type_id, name = dataset_name, dataset_name, f"GTZAN ({dataset_name})"
    else:
        # A local GTZAN folder or parquet copy: the data is GTZAN's, the copy has no Hub id of its own.
        hub_id, type_id, name = "marsyas/gtzan", "marsyas/gtzan", "GTZAN"
    short = SPLIT_PROTOCOL_SHORT.get(protocol, protocol).format(**values)
    return {
        "hub_id": hub_id,
        "type": type_id,
        "name": f"{name}, {short}",
        "protocol": protocol,
        "protocol_text": SPLIT_PROTOCOL_TEXT.get(protocol, protocol).format(**values),
        "synthetic": bool(config.get("synthetic")),
    }


def eval_results(records: RunRecords) -> list[EvalResult]:
    """model-index entries: every finite metric of all_results.json, per split, exactly as recorded."""
    dataset = dataset_description(records)
    results = []
    for prefix, split in EVAL_PREFIXES.items():
        for suffix, metric_type, metric_name, metric_args in CARD_METRICS:
            value = records.metric(f"{prefix}_{suffix}")
            if value is None:
                continue
            results.append(
                EvalResult(
                    task_type="audio-classification",
                    task_name="Music genre classification",
                    dataset_type=dataset["type"],
                    dataset_name=dataset["name"],
                    dataset_split=split,
                    metric_type=metric_type,
                    metric_name=f"{metric_name} ({split})",
                    metric_value=value,
                    metric_args=metric_args,
                )
            )
    return results


def _format(value: Any, digits: int = 4) -> str:
    if isinstance(value, bool) or value is None:
        return "n/a" if value is None else str(value).lower()
    if isinstance(value, float):
        return f"{value:.{digits}f}" if math.isfinite(value) else "n/a"
    return str(value)


def _count(count: Any) -> str:
    if not isinstance(count, (int, float)):
        return "n/a"
    return f"{int(count):,} ({count / 1e6:.1f} M)" if count >= 1e6 else f"{int(count):,}"


def _revision_header(repo_id: str) -> str:
    return (
        f'repo_id = "{repo_id}"\n'
        f'revision = "{REVISION_PLACEHOLDER}"  # pin the commit you reviewed: this repo ships Python code\n'
    )


def loading_snippet(kind: str, repo_id: str) -> str:
    """The Python that loads the upload folder without this project: transformers (+ peft for an adapter)."""
    header = _revision_header(repo_id)
    if kind == "adapter":
        return (
            "from peft import PeftConfig, PeftModel\n"
            "from transformers import AutoConfig, AutoFeatureExtractor\n"
            "from transformers.dynamic_module_utils import get_class_from_dynamic_module\n\n"
            + header
            + "base_id = PeftConfig.from_pretrained(repo_id, revision=revision).base_model_name_or_path\n"
            "config = AutoConfig.from_pretrained(repo_id, revision=revision)  # genre labels, head size, auto_map\n"
            "# The AST-with-MLP-head class comes from this repo (modeling_ast_mlp.py), its frozen weights from the base.\n"
            'model_class = get_class_from_dynamic_module(config.auto_map["AutoModelForAudioClassification"], repo_id, revision=revision)\n'
            "base = model_class.from_pretrained(base_id, config=config)  # the base's AudioSet head is not used\n"
            "model = PeftModel.from_pretrained(base, repo_id, revision=revision).merge_and_unload().eval()\n"
            "feature_extractor = AutoFeatureExtractor.from_pretrained(repo_id, revision=revision)\n"
        )
    return (
        "from transformers import AutoFeatureExtractor, AutoModelForAudioClassification\n\n"
        + header
        + "feature_extractor = AutoFeatureExtractor.from_pretrained(repo_id, revision=revision, trust_remote_code=True)\n"
        "model = AutoModelForAudioClassification.from_pretrained(repo_id, revision=revision, trust_remote_code=True).eval()\n"
    )


def pipeline_snippet(kind: str, repo_id: str, window_seconds: float) -> str:
    """`pipeline("audio-classification")` with this repo's whole-song pipeline (pipeline_genre_classification.py).

    A model repo names the pipeline in config.json (`custom_pipelines`), so `pipeline(repo_id)` builds it. An
    adapter repo is first loaded with its loading snippet (`pipeline(repo_id)` would load the base checkpoint its
    adapter_config.json names, without the adapter), then given to the pipeline class from the repo.
    """
    call = (
        f"# The whole song: cut into {window_seconds:g}-s windows, classified in batches; the top genres of the "
        "mean window probability.\n"
        'print(classifier("song.mp3", top_k=3))  # [{"label": ..., "score": ...}, ...]\n'
        '# Per-window probabilities with start and end times: classifier("song.mp3", return_segments=True)["segments"]\n'
    )
    if kind == "adapter":
        return (
            loading_snippet(kind, repo_id) + "\nfrom transformers import pipeline\n\n"
            'pipeline_class = get_class_from_dynamic_module(config.custom_pipelines["audio-classification"]["impl"], repo_id, revision=revision)\n'
            'classifier = pipeline("audio-classification", model=model, feature_extractor=feature_extractor, pipeline_class=pipeline_class)\n'
            + call
        )
    return (
        "from transformers import pipeline\n\n"
        + _revision_header(repo_id)
        + 'classifier = pipeline("audio-classification", model=repo_id, revision=revision, trust_remote_code=True)\n'
        + call
    )


def usage_snippet(window_seconds: float, hop_seconds: float) -> str:
    """Track-level prediction the way the model was evaluated: mean window probability over the track."""
    return (
        "import torch\n\n"
        "# waveform: mono float32 numpy array at feature_extractor.sampling_rate, e.g.\n"
        "# waveform, _ = librosa.load(path, sr=feature_extractor.sampling_rate, mono=True)\n"
        f"window, hop = int({window_seconds} * feature_extractor.sampling_rate), int({hop_seconds} * feature_extractor.sampling_rate)\n"
        "starts = list(range(0, max(len(waveform) - window, 0) + 1, hop))\n"
        "windows = [waveform[start : start + window] for start in starts]\n"
        'inputs = feature_extractor(windows, sampling_rate=feature_extractor.sampling_rate, return_tensors="pt")\n'
        "with torch.no_grad():\n"
        "    probabilities = model(**inputs).logits.softmax(-1).mean(0)\n"
        "print(model.config.id2label[int(probabilities.argmax())])\n"
    )


def _metrics_table(records: RunRecords) -> str:
    rows = ["| metric | validation | test |", "| --- | --- | --- |"]
    for suffix, _, name, _ in CARD_METRICS + (("loss", None, "Segment loss", None),):
        values = [records.metric(f"{prefix}_{suffix}") for prefix in EVAL_PREFIXES]
        if any(value is not None for value in values):
            rows.append(f"| {name} | " + " | ".join(_format(value) for value in values) + " |")
    return "\n".join(rows)


def _per_class_table(records: RunRecords) -> tuple[str, str] | None:
    prefix = "test" if any(key[0] == "test" for key in records.reports) else "eval"
    track, segment = records.reports.get((prefix, "track")), records.reports.get((prefix, "segment"))
    if track is None and segment is None:
        return None
    split = EVAL_PREFIXES[prefix]
    columns, reports = [], []
    for level, report in (("track", track), ("segment", segment)):
        if report is not None:
            unit = "tracks" if level == "track" else "windows"
            columns += [f"{level} precision", f"{level} recall", f"{level} F1", unit]
            reports.append(report)
    rows = ["| genre | " + " | ".join(columns) + " |", "|" + " --- |" * (len(columns) + 1)]
    for label in records.labels:
        cells = []
        for report in reports:
            scores = report.get(label, {})
            cells += [_format(scores.get(k)) for k in ("precision", "recall", "f1-score")]
            cells.append(str(int(scores.get("support", 0))))
        rows.append(f"| {label} | " + " | ".join(cells) + " |")
    return split, "\n".join(rows)


def _training_log_table(records: RunRecords) -> str | None:
    evaluations = [entry for entry in records.trainer_state.get("log_history", []) if "eval_loss" in entry]
    if not evaluations:
        return None
    columns = [
        ("epoch", "epoch"),
        ("step", "step"),
        ("eval_loss", "validation loss"),
        ("eval_accuracy", "segment accuracy"),
        ("eval_track_accuracy", "track accuracy"),
    ]
    rows = ["| " + " | ".join(name for _, name in columns) + " |", "|" + " --- |" * len(columns)]
    for entry in evaluations:
        rows.append("| " + " | ".join(_format(entry.get(key)) for key, _ in columns) + " |")
    return "\n".join(rows)


def _model_details(records: RunRecords, kind: str) -> list[str]:
    config, results = records.model_config, records.all_results
    lines = []
    lines.append(f"- **Model:** {records.spec.card_description}")
    if records.base_model is not None:
        lines.append(f"- **Base checkpoint:** `{records.base_model}` (frozen)")
    if records.adapter_config is not None:
        lines.append(
            "- **This repo holds:** "
            + (
                "the DoRA adapter and the trained head only (`adapter_model.safetensors`); the base weights are "
                "read from the base checkpoint"
                if kind == "adapter"
                else "the merged model (adapters folded into the base weights): a plain transformers model"
            )
        )
    lines.append(
        f"- **Parameters:** {_count(results.get('model_parameters'))} in total, "
        f"{_count(results.get('trainable_parameters'))} trained"
    )
    shape = ", ".join(
        f"{key}={config[key]}"
        for key in (
            "hidden_size",
            "num_hidden_layers",
            "num_attention_heads",
            "intermediate_size",
            "classifier_hidden_size",
            "loss",
            "focal_gamma",
            "drop_path_rate",
        )
        if key in config
    )
    lines.append(f"- **Architecture:** {shape}")
    if records.adapter_config:
        adapter = records.adapter_config
        lines.append(
            f"- **DoRA:** rank {adapter.get('r')}, alpha {adapter.get('lora_alpha')}, dropout "
            f"{adapter.get('lora_dropout')}, target modules `{adapter.get('target_modules')}`, "
            f"trained in full: {', '.join(adapter.get('modules_to_save') or [])}"
        )
    sampling_rate = records.preprocessor_config.get("sampling_rate") or records.data_summary.get(
        "sampling_rate"
    )
    window, hop = records.windows
    lines.append(
        f"- **Input:** mono audio at {sampling_rate} Hz, cut into {window:g}-s windows with a {hop:g}-s hop "
        "(saved in preprocessor_config.json as `window_seconds` / `hop_seconds`); a track's prediction is "
        "the mean of its windows' probabilities"
    )
    lines.append(f"- **Labels ({len(records.labels)}):** {', '.join(records.labels)}")
    return lines


def _hyperparameters(records: RunRecords) -> list[str]:
    lines = [
        f"- {key}: {value:g}" if isinstance(value, float) else f"- {key}: {_format(value)}"
        for key, value in records.run_config.items()
        if key not in NOT_HYPERPARAMETERS and not is_secret_key(key)
    ]
    state, results = records.trainer_state, records.all_results
    for key, name in (
        ("train_batch_size", "train_batch_size (per device)"),
        ("global_step", "optimizer steps"),
        ("epoch", "epochs trained"),
    ):
        if key in state:
            lines.append(f"- {name}: {_format(state[key])}")
    if state.get("best_metric") is not None:
        metric = records.run_config.get("metric_for_best_model", "metric")
        published = ", the weights published here" if records.run_config.get("load_best_model_at_end") else ""
        lines.append(
            f"- best validation {metric}: {_format(state['best_metric'])} "
            f"(step {state.get('best_global_step', '?')}{published})"
        )
    for key in ("train_loss", "train_runtime"):
        if key in results:
            lines.append(f"- {key}: {_format(results[key])}")
    return lines


def _data_section(records: RunRecords, dataset: dict[str, Any]) -> list[str]:
    summary = records.data_summary
    lines = [f"- **Source:** {summary.get('source', dataset['name'])}"]
    lines.append(
        f"- **Split protocol (`{dataset['protocol']}`):** {dataset['protocol_text']}; splits are made by "
        "track, never by window, so no clip has windows on both sides"
    )
    tracks, windows = summary.get("tracks", {}), summary.get("windows", {})
    if tracks:
        lines.append(
            "- **Tracks / windows:** "
            + ", ".join(
                f"{split} {tracks.get(split, 0)} / {windows.get(split, 0)}"
                for split in ("train", "validation", "test")
            )
        )
    per_label = summary.get("class_counts", {}).get("tracks", {})
    if per_label.get("train"):
        lines.append(
            "- **Tracks per label (train / validation / test):** "
            + ", ".join(
                f"{label} {' / '.join(str(per_label.get(split, {}).get(label, 0)) for split in ('train', 'validation', 'test'))}"
                for label in per_label["train"]
            )
        )
    if summary.get("class_weights"):
        lines.append(
            "- **Class weighting (`balanced`, inverse frequency of the training windows):** "
            + ", ".join(f"{label} {weight:.3g}" for label, weight in summary["class_weights"].items())
        )
    if records.run_config.get("max_tracks_per_genre"):
        lines.append(
            f"- **Capped** at {records.run_config['max_tracks_per_genre']} tracks per genre (a quick run)"
        )
    if summary.get("skipped_unreadable"):
        lines.append(f"- **Skipped (unreadable):** {', '.join(map(str, summary['skipped_unreadable']))}")
    if dataset["synthetic"]:
        lines.append(
            "- **Synthetic data:** this model was trained on music the project generates itself (an "
            "offline smoke test). Its metrics say the pipeline works, nothing about real music."
        )
    return lines


LIMITATIONS = """\
- **Intended use:** research and teaching on music-genre classification; tagging clips into GTZAN's ten genres.
  It is not a general music tagger: everything outside the ten labels is forced into one of them.
- **GTZAN's known faults** (Sturm, 2013): exact and near repetitions, clips of the same artist across the
  collection, mislabelled clips and distorted recordings. With a random (stratified or k-fold) split, repeated
  artists inflate accuracy; the `fault_filtered` split (Kereliuk, Sturm & Larsen) removes this and gives the
  more honest figure. Check which split the numbers above come from.
- **Western-pop bias:** GTZAN's ten labels and its 1,000 clips are mostly Western, largely Anglo-American
  popular music, collected around 2000–2001 from CDs, radio and microphone recordings. Other musical
  traditions, newer productions and genres outside the ten are out of distribution.
- **30-second clip origin:** the model saw 30-s excerpts (22.05 kHz mono, resampled to the model's rate), cut
  into windows. Full tracks work when cut the same way (resample to `feature_extractor.sampling_rate` and
  downmix to mono first), but intros, long silences and live recordings were rare in training.
- **Segment vs. track:** per-window predictions are noisier than the track-level figures; aggregate windows
  as in the snippet above.
- **Licence of the data:** GTZAN was assembled without explicit licences for the recordings; check that your
  use of models trained on it is allowed where you are.
"""


OWN_DATA_LIMITATIONS = """\
- **Intended use:** classifying music into the labels above, the ones of the data it was trained on. It is not
  a general music tagger: everything outside these labels is forced into one of them.
- **Small and unbalanced data:** the figures above come from the held-out tracks of that data; with few tracks
  per label they move by several points from one split to the next (a cross-validation, `--cross_validate true`,
  gives their spread). `class_weighting` (see the hyperparameters) says whether rare labels were weighted up.
- **Segment vs. track:** per-window predictions are noisier than the track-level figures; aggregate windows
  as in the snippet above.
- **Licence of the data:** check that your use of a model trained on these recordings is allowed where you are.
"""


def _onnx_section(records: RunRecords, repo_id: str) -> list[str]:
    """A paragraph on the `onnx/` export, when the run has one (`hub push` uploads it)."""
    files = sorted(path.name for path in (records.output_dir / ONNX_SUBFOLDER).glob("*.onnx"))
    if not files:
        return []
    return [
        "ONNX: "
        + ", ".join(f"`{ONNX_SUBFOLDER}/{name}`" for name in files)
        + " hold the whole model (adapters "
        "merged) for ONNX Runtime (`model_quantized.onnx`: int8 MatMul/Gemm weights). Input `input_values` as the "
        "feature extractor makes it, output `logits`. With this project: `python -m ast_dora.predict song.mp3 "
        f"--model {repo_id} --backend onnx`."
    ]


def build_model_card(
    records: RunRecords, repo_id: str, kind: str = "model", license: str = "apache-2.0"
) -> ModelCard:
    """The card of one upload: `kind` is 'model' (full transformers model) or 'adapter' (DoRA adapter only)."""
    if kind not in CARD_KINDS:
        raise ValueError(f"kind={kind!r} is not a card kind; use one of {CARD_KINDS}.")
    if kind == "adapter" and records.adapter_config is None:
        raise RunRecordsError(
            f"{records.output_dir} has no adapter/adapter_config.json: only AST-DoRA runs have an adapter."
        )
    dataset = dataset_description(records)
    model_name = repo_id.split("/")[-1]
    base_model = records.base_model if looks_like_hub_id(records.base_model) else None
    tags = [
        "audio-classification",
        "music-genre-classification",
        *(["gtzan"] if records.gtzan_labels else []),
        "audio",
    ]
    tags += list(records.spec.card_tags)
    card_data = ModelCardData(
        license=license,
        library_name="peft" if kind == "adapter" else "transformers",
        base_model=base_model,
        datasets=[dataset["hub_id"]] if dataset["hub_id"] else None,
        metrics=sorted({metric_type for _, metric_type, _, _ in CARD_METRICS}),
        pipeline_tag="audio-classification",
        tags=tags,
        model_name=model_name,
        eval_results=eval_results(records) or None,
    )

    kind_text = records.spec.card_summary[kind]
    window, hop = records.windows
    test_track = records.metric("test_track_accuracy")
    headline = f" Test track accuracy: **{_format(test_track)}**." if test_track is not None else ""
    base_text = (
        f", fine-tuned from [`{records.base_model}`](https://huggingface.co/{records.base_model})"
        if base_model
        else ""
    )
    sections = [
        f"# {model_name}",
        f"Music-genre classifier: {kind_text}{base_text}, trained on {dataset['name']}, with the ast-dora "
        f"pipeline (`finetune/run.py`).{headline}",
        "## Model details",
        "\n".join(_model_details(records, kind)),
        "## How to use",
        "With `transformers`"
        + (" and `peft`" if kind == "adapter" else "")
        + " only (no need for this project), "
        "the `audio-classification` pipeline analyses the whole song: this repo's pipeline "
        f"(`pipeline_genre_classification.py`) cuts it into the model's {window:g}-s windows"
        + (
            f" (back to back; `hop_seconds={hop:g}` places them every {hop:g} s, as the evaluation below did)"
            if hop != window
            else ""
        )
        + ", classifies every window and returns the top "
        "genres of their mean probability, the track-level prediction (transformers' standard audio-classification "
        'pipeline would hear only the first window). Files, URLs, `{"raw": waveform, "sampling_rate": rate}` '
        "dicts and arrays are accepted; other rates are resampled and channels averaged.",
        f"```python\n{pipeline_snippet(kind, repo_id, window)}```",
        (
            "This loads the adapter onto its base, then hands the model to this repo's pipeline class: "
            '`pipeline("audio-classification", model=repo_id)` alone would load the base checkpoint named in '
            "adapter_config.json without the adapter. "
            if kind == "adapter"
            else ""
        )
        + "Loading runs this repo's `*.py` files on your machine, so read them and pin `revision` to the commit you "
        "read (the commit hash under *Files and versions*); a later commit cannot then change what you run."
        + (
            " The base is loaded with the fine-tuned config, so transformers reports its AudioSet head as unused and "
            "the MLP head as newly initialised: the adapter then supplies the trained head."
            if kind == "adapter"
            else ""
        ),
    ]
    if kind != "adapter":
        sections += [
            "The model and its feature extractor on their own:",
            f"```python\n{loading_snippet(kind, repo_id)}```",
        ]
    sections += [
        "Track-level prediction by hand, without the pipeline, as evaluated below:",
        f"```python\n{usage_snippet(window, hop)}```",
        f"With this project installed: `python -m ast_dora.hub load {repo_id} --revision {REVISION_PLACEHOLDER} "
        "--audio song.wav` (adapter repos are put on their base automatically).",
        *_onnx_section(records, repo_id),
        "## Training data",
        "\n".join(_data_section(records, dataset)),
        "## Evaluation",
        "Segment metrics score each window on its own; track accuracy scores each clip by the mean of its windows' "
        "probabilities (and, as a second view, by majority vote). All figures are read from this run's "
        "`all_results.json`, computed by the project's `evaluate` metric (`ast_dora/genre_classification`, "
        "`evaluate.load(path)`).",
        _metrics_table(records),
    ]
    per_class = _per_class_table(records)
    if per_class is not None:
        split, table = per_class
        sections += [f"### Per class ({split} split)", table]
    matrix = records.confusion_matrix_file()
    if matrix is not None:
        sections += [
            "### Confusion matrix",
            f"![Confusion matrix: {matrix[len('confusion_matrix_') : -4].replace('_', ', ')}]({matrix})",
            "The other splits and levels are in `confusion_matrix_*.png`; per-class reports in "
            "`classification_report_*.txt`.",
        ]
    sections += ["## Training procedure", "\n".join(_hyperparameters(records))]
    log_table = _training_log_table(records)
    if log_table is not None:
        sections += ["### Validation during training", log_table]
    sections += [
        "## Intended use and limitations",
        (LIMITATIONS if records.gtzan_labels else OWN_DATA_LIMITATIONS).strip(),
    ]
    versions = [f"transformers {records.model_config.get('transformers_version', '?')}"]
    if records.adapter_config and kind == "adapter":
        versions.append(f"peft {records.adapter_config.get('peft_version', '?')}")
    sections += ["## Framework versions", "Saved with " + ", ".join(versions) + "."]
    content = f"---\n{card_data.to_yaml()}\n---\n\n" + "\n\n".join(sections) + "\n"
    return ModelCard(content)


__all__ = [
    "REVISION_PLACEHOLDER",
    "RunRecords",
    "RunRecordsError",
    "build_model_card",
    "dataset_description",
    "eval_results",
    "loading_snippet",
    "pipeline_snippet",
    "usage_snippet",
]
