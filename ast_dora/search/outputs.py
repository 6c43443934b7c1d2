"""What a search leaves in `output_dir`: `best_config.yaml`, `trials.csv` and the Optuna plots."""

from __future__ import annotations

import enum
import logging
import os
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import yaml

from ..config import RunConfig
from .settings import FAIL_REASON, RETRY_OF, SearchSettings

logger = logging.getLogger(__name__)

BEST_CONFIG_NAME = "best_config.yaml"
BEST_MODEL_SUBFOLDER = "best"


def _yaml_value(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, dict):
        return {str(k): _yaml_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_yaml_value(v) for v in value]
    return value


def best_config(run: RunConfig, best_trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
    """The run's own flat config (command-line overrides included, `search:` left out) with the best trial's
    values, training into `output_dir/best`: ready for `finetune/run.py --config`."""
    config = {key: _yaml_value(value) for key, value in run.raw.items()}
    config.update({key: _yaml_value(value) for key, value in best_trial.params.items()})
    config["output_dir"] = os.path.join(str(run.training.output_dir), BEST_MODEL_SUBFOLDER)
    return config


def _describe_storage(settings: SearchSettings) -> str:
    if settings.journal_file is not None:
        return f"the journal file {settings.journal_file}"
    from sqlalchemy.engine import make_url

    return make_url(settings.storage).render_as_string(hide_password=True)


def trials_table(study: optuna.Study):
    """`study.trials_dataframe()` (user attributes included: `user_attrs_fail_reason`, `user_attrs_retry_of`)
    plus `retried_as`: the trial that ran a dead trial's parameters again. A trial failed by the heartbeat check
    has no `fail_reason` of its own (Optuna fails it, and a finished trial takes no attributes): it gets one here."""
    import pandas as pd

    table = study.trials_dataframe()
    retry_column = f"user_attrs_{RETRY_OF}"
    if retry_column not in table.columns:
        return table
    # Trial numbers stay whole numbers in a column with gaps (pandas' nullable integers, not floats with NaN).
    table[retry_column] = table[retry_column].astype("Int64")
    retried_as = {
        int(of): int(number)
        for number, of in zip(table["number"], table[retry_column], strict=True)
        if of is not pd.NA
    }
    table["retried_as"] = pd.array([retried_as.get(int(number)) for number in table["number"]], dtype="Int64")
    reason_column = f"user_attrs_{FAIL_REASON}"
    if reason_column not in table.columns:
        table[reason_column] = None
    silent = table["retried_as"].notna() & table[reason_column].isna() & (table["state"] == "FAIL")
    table.loc[silent, reason_column] = "its worker stopped sending heartbeats mid-trial (killed or cut off)"
    return table


def _atomic_write(path: Path, write: Callable[[str], None]) -> None:
    # Several workers may share output_dir: each writes a whole file and renames it into place.
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=path.suffix)
    os.close(handle)
    try:
        write(temporary)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)  # mkstemp makes the file private; give it a normal file's mode
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def write_search_outputs(study: optuna.Study, run: RunConfig, settings: SearchSettings) -> dict[str, Path]:
    output_dir = Path(run.training.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    best_trial = study.best_trial
    paths = {
        "best_config": output_dir / BEST_CONFIG_NAME,
        "trials": output_dir / "trials.csv",
        "history": output_dir / "optuna_history.png",
        "importances": output_dir / "optuna_importances.png",
    }

    header = (
        f"# Best trial {best_trial.number} of Optuna study {settings.study_name!r} in {_describe_storage(settings)}:\n"
        f"# validation {settings.metric} = {best_trial.value:.4f}. Searched: {', '.join(best_trial.params)}.\n"
        f"# python finetune/run.py --config {paths['best_config']}\n"
    )
    body = yaml.safe_dump(best_config(run, best_trial), sort_keys=False)
    _atomic_write(paths["best_config"], lambda p: Path(p).write_text(header + body))
    _atomic_write(paths["trials"], lambda p: trials_table(study).to_csv(p, index=False))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization.matplotlib import plot_optimization_history, plot_param_importances

    # Optuna's matplotlib backend is marked experimental.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        axes = plot_optimization_history(study, target_name=f"validation {settings.metric}")
        _atomic_write(paths["history"], lambda p: axes.figure.savefig(p, format="png", bbox_inches="tight"))
        plt.close(axes.figure)
        try:
            axes = plot_param_importances(study)
        except (ValueError, RuntimeError) as error:
            # Importances need at least two completed trials; say so in the picture instead.
            logger.warning("Parameter importances not computed: %s", error)
            figure, axes = plt.subplots(figsize=(6, 2))
            axes.axis("off")
            axes.text(
                0.5,
                0.5,
                f"Hyperparameter importances not available yet:\n{error}",
                ha="center",
                va="center",
                wrap=True,
            )
        _atomic_write(
            paths["importances"], lambda p: axes.figure.savefig(p, format="png", bbox_inches="tight")
        )
        plt.close(axes.figure)
    if settings.storage.startswith("sqlite:///"):
        paths["study"] = Path(settings.storage.removeprefix("sqlite:///"))
    elif settings.journal_file is not None:
        paths["study"] = settings.journal_file
    return paths


__all__ = ["BEST_CONFIG_NAME", "BEST_MODEL_SUBFOLDER", "best_config", "trials_table", "write_search_outputs"]
