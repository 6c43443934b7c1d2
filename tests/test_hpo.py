"""The Optuna search (`ast_dora/search/`): space validation, a whole search through `finetune/run.py`'s
`main()`, a search killed mid-trial and resumed, two workers sharing one study on a real PostgreSQL, and the
faults: trials that fail (out of memory, a NaN loss), a worker killed on another machine (heartbeats), and
several worker processes on one machine sharing a journal-file study.

Everything trains a 1-layer ViT-hybrid on 4 synthetic 4-s tracks per genre for 1-2 epochs; the data and its
features are made once per session, so that the worker subprocesses only load them. Each subprocess costs a
start-up of torch and transformers, so where a test needs a second worker or a rerun, this process is it.
"""

from __future__ import annotations

import glob
import logging
import os
import pwd
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from contextlib import closing
from pathlib import Path

import optuna
import pytest
import torch
import yaml
from conftest import require_installed
from optuna.trial import TrialState

from ast_dora import search as hpo
from ast_dora.cli import main
from ast_dora.config import ConfigError, parse_config

REPO = Path(__file__).resolve().parents[1]
RUN_PY = REPO / "finetune" / "run.py"
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)

SEARCH = {
    "n_trials": 3,
    "pruner": {"name": "median", "n_startup_trials": 1},
    "sampler": {"name": "random", "seed": 0},
    "space": {
        "learning_rate": {"type": "float", "low": 1.0e-4, "high": 1.0e-2, "log": True},
        "per_device_train_batch_size": [4, 8],
        "gradient_accumulation_steps": [1, 2],
        "hidden_dropout_prob": {"type": "float", "low": 0.0, "high": 0.3},
    },
}


@pytest.fixture(scope="session")
def data_root(tmp_path_factory) -> Path:
    """Synthetic data and its cached features, built once; every config below points at them."""
    root = tmp_path_factory.mktemp("hpo_data")
    from ast_dora.data import build_datasets
    from ast_dora.models import get_model_spec
    from ast_dora.models.factory import build_feature_extractor

    run = parse_config(["--config", write_config(root / "warm", root, search=None)])
    feature_extractor = build_feature_extractor(run.model)
    build_datasets(
        run.data,
        feature_extractor,
        default_window=get_model_spec(run.model.model_type).default_windows,
        seed=0,
        output_dir=str(root / "warm" / "out"),
    )
    return root


def write_config(folder: Path, data_root: Path, search: dict | None = SEARCH, **overrides) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    config = {
        "model_type": "vit_hybrid",
        "config_overrides": "hidden_size=32,num_hidden_layers=1,num_attention_heads=2,intermediate_size=64,pooling=mean",
        "synthetic": True,
        "data_dir": str(data_root / "synthetic"),
        "synthetic_tracks_per_genre": 4,
        "synthetic_duration_seconds": 4,  # one 4-s window per track
        "split": "folds",
        "num_folds": 4,
        "features_cache_dir": str(data_root / "features"),
        "output_dir": str(folder / "out"),
        "seed": 0,
        "num_train_epochs": 2,
        "per_device_train_batch_size": 8,
        "per_device_eval_batch_size": 32,
        "learning_rate": 1.0e-3,
        "eval_strategy": "epoch",
        "save_strategy": "epoch",
        "save_total_limit": 1,
        "load_best_model_at_end": True,
        "metric_for_best_model": "track_accuracy",
        "logging_steps": 50,
        "disable_tqdm": True,
        "report_to": "none",
        **overrides,
    }
    if search is not None:
        config["search"] = search
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return str(path)


def load_trials(storage: str, study_name: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=study_name, storage=storage).get_trials(deepcopy=False)


def start_worker(config: str, log: Path, *extra: str) -> subprocess.Popen:
    with open(log, "w") as out:
        return subprocess.Popen(
            [sys.executable, str(RUN_PY), "--config", config, *extra],
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def finish(process: subprocess.Popen, log: Path, timeout: float = 150) -> None:
    try:
        returncode = process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        returncode = "timeout"
    assert returncode == 0, f"worker exited with {returncode}:\n{log.read_text()[-4000:]}"


# ------------------------------------------------------------------------------------------------------
# the search: section
# ------------------------------------------------------------------------------------------------------


def settings_for(tmp_path, model_type="vit_hybrid", **search):
    config = {
        "model_type": model_type,
        "synthetic": True,
        "data_dir": str(tmp_path),
        "output_dir": str(tmp_path / "out"),
        "search": {"n_trials": 2, "space": {"learning_rate": [1e-3]}, **search},
    }
    if model_type == "ast_dora":
        config["model_name_or_path"] = str(tmp_path / "ast")
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return hpo.parse_search_settings(parse_config(["--config", str(path)]))


@pytest.mark.parametrize(
    "search, message",
    [
        (
            {"space": {"learning_rte": {"type": "float", "low": 1e-5, "high": 1e-3}}},
            "Did you mean 'learning_rate'",
        ),
        (
            {"space": {"dora_rank": {"type": "int", "low": 2, "high": 8}}},
            "a field of model_type ast_dora, and this config trains vit_hybrid",
        ),
        ({"space": {"output_dir": ["a", "b"]}}, "not a searchable field"),
        (
            {"space": {"learning_rate": {"type": "float", "low": 0.0, "high": 1e-3, "log": True}}},
            "log range needs low > 0",
        ),
        (
            {"space": {"learning_rate": {"type": "float", "low": 1e-5, "high": 1e-3, "lgo": True}}},
            "Unknown key 'lgo' in search.space.learning_rate",
        ),
        ({"space": {"per_device_train_batch_size": {"type": "float", "low": 2, "high": 8}}}, "is an integer"),
        (
            {"space": {"hidden_dropout_prob": {"type": "float", "low": 0.0, "high": 1.5}}},
            "which the model refuses",
        ),
        ({"space": {"lr_scheduler_type": ["cosine", "cosinus"]}}, "'cosinus' is not one of"),
        ({"n_trial": 3}, "Did you mean 'n_trials'"),
        ({"n_trials": 0}, "positive integer"),
        ({"pruner": "medain"}, "give one of median, hyperband, none"),
        ({"pruner": {"name": "median", "n_startup": 2}}, "options {'n_startup': 2} are not accepted"),
        ({"metric": "loss"}, "not a validation metric"),
        ({"storage": "study.db"}, "not a database URL"),
    ],
)
def test_bad_search_sections_fail_with_a_clear_message(tmp_path, search, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        settings_for(tmp_path, **search)


def test_bad_space_fails_before_any_data_is_prepared(tmp_path):
    config = {
        "model_type": "vit_hybrid",
        "data_dir": str(tmp_path / "no-such-folder"),  # reaching the data would fail differently
        "output_dir": str(tmp_path / "out"),
        "search": {"n_trials": 2, "space": {"dora_rank": [2, 4]}},
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(
        ConfigError,
        match="search.space.dora_rank: it is a field of model_type ast_dora, and this config trains vit_hybrid",
    ):
        main(["--config", str(tmp_path / "config.yaml")])


def test_search_section_defaults_and_model_fields(tmp_path):
    settings = settings_for(tmp_path)
    assert settings.storage == f"sqlite:///{(tmp_path / 'out' / 'study.db').resolve()}"
    assert settings.study_name == "out" and settings.metric == "track_accuracy"
    assert settings.pruner == {"name": "median"} and not settings.retrain_best

    space = {
        "learning_rate": {
            "type": "float",
            "low": "1e-5",
            "high": 1e-3,
            "log": True,
        },  # YAML reads 1e-5 as a string
        "dora_rank": {"type": "int", "low": 2, "high": 16, "log": True},
        "classifier_hidden_size": [64, 128],
    }
    settings = settings_for(tmp_path, model_type="ast_dora", space=space)
    assert set(settings.training_space) == {"learning_rate"}
    assert set(settings.model_space) == {"dora_rank", "classifier_hidden_size"}
    assert settings.training_space["learning_rate"].low == pytest.approx(1e-5)


def test_shipped_search_configs_are_valid():
    for name in ("hpo_smoke_vit_hybrid", "hpo_smoke_ast_dora", "hpo_vit_hybrid", "hpo_ast_dora"):
        run = parse_config(["--config", str(REPO / "configs" / f"{name}.yaml")])
        settings = hpo.parse_search_settings(run)
        assert settings.model_space, name  # each searches model fields too, sampled in model_init(trial)
        assert settings.n_trials == (6 if "smoke" in name else 35), name


# ------------------------------------------------------------------------------------------------------
# a whole search, in process
# ------------------------------------------------------------------------------------------------------


class PruneTrialOne(optuna.pruners.BasePruner):
    """Prunes trial 1 at its first report: deterministic, unlike a median over a few tiny trials."""

    def prune(self, study, trial) -> bool:
        return trial.number == 1


@pytest.mark.slow
def test_search_writes_its_outputs_and_the_best_config_trains(tmp_path, data_root, monkeypatch):
    monkeypatch.setitem(hpo.PRUNERS, "prune_trial_one", PruneTrialOne)
    search = {
        **SEARCH,
        "pruner": "prune_trial_one",
        "retrain_best": True,
        "space": {**SEARCH["space"], "num_train_epochs": {"type": "int", "low": 1, "high": 2}},
    }
    config = write_config(tmp_path, data_root, search=search)
    output_dir = tmp_path / "out"
    # output_dir/best as an earlier, smaller study's retraining left it: another best config, its checkpoint.
    earlier_best = yaml.safe_load(Path(config).read_text())
    earlier_best.pop("search")
    earlier_best.update(output_dir=str(output_dir / "best"), learning_rate=0.5)
    (output_dir / "best" / "checkpoint-1").mkdir(parents=True)
    (output_dir / "best" / "run_config.yaml").write_text(yaml.safe_dump(earlier_best))

    metrics = main(["--config", config])

    trials = load_trials(f"sqlite:///{output_dir / 'study.db'}", "out")
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.PRUNED, TrialState.COMPLETE]
    # The pruner saw the validation metric once per evaluation, numbered by evaluation, not by step.
    assert list(trials[1].intermediate_values) == [1]
    for trial in (trials[0], trials[2]):
        assert list(trial.intermediate_values) == list(range(1, int(trial.params["num_train_epochs"]) + 1))
        assert trial.value == max(
            trial.intermediate_values.values()
        )  # the best epoch, as load_best_model_at_end keeps
    assert metrics["trials_pruned"] == 1 and metrics["trials_complete"] == 2
    for name in (
        "best_config.yaml",
        "trials.csv",
        "optuna_history.png",
        "optuna_importances.png",
        "study.db",
    ):
        assert (output_dir / name).is_file(), name
    assert not list(output_dir.glob("run-*")), "trial checkpoints are removed after each trial"
    csv_lines = (output_dir / "trials.csv").read_text().splitlines()
    assert len(csv_lines) == 4 and "params_learning_rate" in csv_lines[0] and "PRUNED" in csv_lines[2]

    best = max((t for t in trials if t.state == TrialState.COMPLETE), key=lambda t: t.value)
    best_run = parse_config(["--config", str(output_dir / "best_config.yaml")])
    assert best_run.search is None
    assert best_run.training.learning_rate == pytest.approx(best.params["learning_rate"])
    assert best_run.training.per_device_train_batch_size == best.params["per_device_train_batch_size"]
    assert best_run.model.hidden_dropout_prob == pytest.approx(best.params["hidden_dropout_prob"])
    assert best_run.training.output_dir == str(output_dir / "best")
    # retrain_best ran finetune/run.py's training on best_config.yaml (afresh: the checkpoint in output_dir/best
    # is of another config, which a plain rerun would refuse to resume): validation and test, once.
    assert metrics["eval_track_accuracy"] == pytest.approx(best.value)
    assert "test_track_accuracy" in metrics
    assert (output_dir / "best" / "all_results.json").is_file() and (
        output_dir / "best" / "model.safetensors"
    ).is_file()


# ------------------------------------------------------------------------------------------------------
# resume after a kill
# ------------------------------------------------------------------------------------------------------


def read_trial_states(db: Path) -> list[tuple[int, str, bool]]:
    """(number, state, has a worker) per trial, read-only: opening the study with Optuna while the worker
    creates it would race the worker's creation of the tables."""
    try:
        with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)) as connection:
            return connection.execute(
                "SELECT t.number, t.state, EXISTS(SELECT 1 FROM trial_user_attributes a"
                " WHERE a.trial_id = t.trial_id AND a.key = 'worker') FROM trials t"
            ).fetchall()
    except sqlite3.OperationalError:
        return []  # no database or no tables yet


@pytest.mark.slow
def test_killed_search_resumes_and_keeps_its_finished_trials(tmp_path, data_root):
    search = {**SEARCH, "n_trials": 2, "pruner": "none"}
    config = write_config(tmp_path, data_root, search=search, num_train_epochs=1)
    db = tmp_path / "out" / "study.db"
    storage = f"sqlite:///{db}"
    log = tmp_path / "first.log"
    worker = start_worker(config, log)
    try:
        deadline = time.time() + 120
        while True:  # kill it inside a trial, after one has completed
            assert worker.poll() is None, f"the search ended before it was killed:\n{log.read_text()[-3000:]}"
            assert time.time() < deadline, f"no trial completed in time:\n{log.read_text()[-3000:]}"
            states = read_trial_states(db)
            if any(state == "COMPLETE" for _, state, _ in states) and any(
                state == "RUNNING" and has_worker for _, state, has_worker in states
            ):
                break
            time.sleep(0.2)
        worker.send_signal(signal.SIGKILL)
    finally:
        worker.kill()
        worker.wait()

    before = {t.number: t for t in load_trials(storage, "out")}
    killed = [n for n, t in before.items() if t.state == TrialState.RUNNING]
    assert len(killed) == 1
    kept = {n: t.value for n, t in before.items() if t.state == TrialState.COMPLETE}

    # The same command again (in this process, to spare a second start-up of torch and transformers).
    main(["--config", config])

    after = {t.number: t for t in load_trials(storage, "out")}
    assert {n: after[n].value for n in kept} == kept, "finished trials are kept as they were"
    assert after[killed[0]].state == TrialState.FAIL, "the killed trial is marked failed, not left running"
    assert sum(t.state in FINISHED for t in after.values()) == 2
    assert all(t.state != TrialState.RUNNING for t in after.values())
    assert (tmp_path / "out" / "best_config.yaml").is_file()


# ------------------------------------------------------------------------------------------------------
# two workers, one study, a real PostgreSQL on loopback
# ------------------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def postgres_url():
    """A throwaway PostgreSQL server (Debian's `postgresql` package) on 127.0.0.1; yields a database URL.

    PostgreSQL refuses to run as root, so under root (as in CI) it runs as the `postgres` user the package
    creates, in a folder of /tmp that user owns."""
    bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    require_installed(bool(bins), "PostgreSQL (Debian's postgresql package)", "apt-get install postgresql")
    bin_dir = Path(bins[-1]).parent
    as_user: list[str] = []
    root = Path(tempfile.mkdtemp(prefix="hpo_pg_"))
    if os.geteuid() == 0:
        postgres = pwd.getpwnam("postgres")
        os.chown(root, postgres.pw_uid, postgres.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    data, port = root / "data", free_port()

    def pg(*args: str) -> None:
        result = subprocess.run([*as_user, *args], cwd=root, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, f"{args[0]} failed:\n{result.stdout}\n{result.stderr}"

    try:
        pg(str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust", "--no-sync")
        options = f"-c listen_addresses=127.0.0.1 -p {port} -k {root} -c fsync=off"
        pg(
            str(bin_dir / "pg_ctl"),
            "-D",
            str(data),
            "-o",
            options,
            "-l",
            str(root / "server.log"),
            "-w",
            "start",
        )
        import psycopg2

        connection = psycopg2.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres")
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute("CREATE DATABASE hpo")
        connection.close()
        yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/hpo"
    finally:
        if (data / "postmaster.pid").exists():
            subprocess.run(
                [*as_user, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
                cwd=root,
                capture_output=True,
                timeout=60,
            )
        shutil.rmtree(root, ignore_errors=True)


def postgres_study_exists(url: str, study_name: str) -> bool:
    # A plain query: opening the study with Optuna while the worker creates it would race its table creation.
    import psycopg2
    from sqlalchemy.engine import make_url

    address = make_url(url)
    try:
        with (
            closing(
                psycopg2.connect(
                    host=address.host, port=address.port, user=address.username, dbname=address.database
                )
            ) as connection,
            connection.cursor() as cursor,
        ):
            cursor.execute("SELECT 1 FROM studies WHERE study_name = %s", (study_name,))
            return cursor.fetchone() is not None
    except psycopg2.Error:
        return False  # no tables yet


@pytest.mark.slow
def test_two_workers_share_one_study_on_postgresql(tmp_path, data_root, postgres_url):
    """A `finetune/run.py` subprocess and this process (the same `main()`, spared a second start-up of
    torch) work on one study until it has `n_trials` finished trials between them."""
    n_trials = 4
    search = {**SEARCH, "n_trials": n_trials, "pruner": "none", "sampler": "random", "study_name": "shared"}
    configs = [
        write_config(tmp_path / f"worker{k}", data_root, search=search, num_train_epochs=1) for k in range(2)
    ]
    log = tmp_path / "worker0.log"
    other = start_worker(configs[0], log, "--storage", postgres_url)
    try:
        deadline = time.time() + 120
        while True:  # join once the other worker is up, so that both get trials
            assert other.poll() is None, f"the other worker ended early:\n{log.read_text()[-3000:]}"
            assert time.time() < deadline, (
                f"the other worker did not create the study:\n{log.read_text()[-3000:]}"
            )
            if postgres_study_exists(postgres_url, "shared"):
                break
            time.sleep(0.3)
        main(["--config", configs[1], "--storage", postgres_url])
        finish(other, log)
    finally:
        other.kill()
        other.wait()

    trials = load_trials(postgres_url, "shared")
    finished = [t for t in trials if t.state in FINISHED]
    assert len(finished) == n_trials, [(t.number, t.state) for t in trials]
    assert len({t.number for t in trials}) == len(trials), "trial numbers are unique"
    # Nothing lost or run twice: any other trial is one a worker created after the last place was taken
    # (a race between the two) and dropped before training.
    assert all("skipped" in t.user_attrs for t in trials if t.state not in FINISHED)
    assert all(t.state != TrialState.RUNNING for t in trials)
    pids = {t.user_attrs["worker"]["pid"] for t in finished}
    assert pids == {other.pid, os.getpid()}, "both workers ran trials of the one study"
    for k in range(2):
        assert (tmp_path / f"worker{k}" / "out" / "best_config.yaml").is_file()


# ------------------------------------------------------------------------------------------------------
# faults: failing trials, a worker killed on another machine, several workers on this one
# ------------------------------------------------------------------------------------------------------


def read_trials_csv(output_dir: Path) -> dict[int, dict[str, str]]:
    import csv

    with open(output_dir / "trials.csv") as f:
        return {int(row["number"]): row for row in csv.DictReader(f)}


def test_failed_trials_do_not_stop_the_search(tmp_path, data_root, monkeypatch, caplog):
    """A trial that runs out of memory (simulated: a batch of 8 raises CUDA's error) and one whose learning
    rate makes the loss NaN both fail, with their reason recorded, and the search still finishes its n_trials."""
    original_compute_loss = hpo.SearchTrainer.compute_loss

    def compute_loss(self, model, inputs, *args, **kwargs):
        if model.training and len(inputs["labels"]) > 4:
            raise torch.OutOfMemoryError(
                "CUDA out of memory. Tried to allocate 2.00 GiB (simulated: batch of 8)"
            )
        return original_compute_loss(self, model, inputs, *args, **kwargs)

    monkeypatch.setattr(hpo.SearchTrainer, "compute_loss", compute_loss)
    search = {
        **SEARCH,
        "n_trials": 2,
        "pruner": "none",
        "space": {"learning_rate": [1.0e-3, 1.0e30], "per_device_train_batch_size": [4, 8]},
    }
    config = write_config(tmp_path, data_root, search=search, num_train_epochs=1)
    output_dir = tmp_path / "out"
    output_dir.mkdir()
    # The trials' parameters, in this order: out of memory, NaN loss, then two that train.
    study = optuna.create_study(
        storage=f"sqlite:///{output_dir / 'study.db'}", study_name="out", direction="maximize"
    )
    for learning_rate, batch_size in ((1.0e-3, 8), (1.0e30, 4), (1.0e-3, 4), (1.0e-3, 4)):
        study.enqueue_trial({"learning_rate": learning_rate, "per_device_train_batch_size": batch_size})

    with caplog.at_level(logging.WARNING):
        metrics = main(["--config", config])

    trials = load_trials(f"sqlite:///{output_dir / 'study.db'}", "out")
    assert [t.state for t in trials] == [
        TrialState.FAIL,
        TrialState.FAIL,
        TrialState.COMPLETE,
        TrialState.COMPLETE,
    ]
    assert metrics["trials_failed"] == 2 and metrics["trials_complete"] == 2
    out_of_memory, diverged = trials[0], trials[1]
    assert out_of_memory.user_attrs["fail_reason"].startswith("OutOfMemoryError: CUDA out of memory")
    assert diverged.user_attrs["fail_reason"].startswith("NonFiniteLoss: the training loss became")
    # At once: the NaN trial stopped inside its one epoch, before any evaluation.
    assert not diverged.intermediate_values
    assert re.search(r"by optimizer step [1-4] \(", diverged.user_attrs["fail_reason"]), diverged.user_attrs
    rows = read_trials_csv(output_dir)
    for trial in (out_of_memory, diverged):
        assert rows[trial.number]["state"] == "FAIL"
        assert rows[trial.number]["user_attrs_fail_reason"] == trial.user_attrs["fail_reason"]
    assert rows[2]["user_attrs_fail_reason"] == "" and rows[2]["state"] == "COMPLETE"
    assert f"Trial 0 failed ({out_of_memory.user_attrs['fail_reason']}); the search goes on." in caplog.text
    assert not list(output_dir.glob("run-*")), "failed trials' checkpoints are removed too"


@pytest.mark.slow
def test_worker_killed_on_another_machine_is_noticed_by_heartbeat(
    tmp_path, data_root, postgres_url, monkeypatch
):
    """Worker A (a `finetune/run.py` subprocess) is SIGKILLed inside a trial; worker B (this process, told it
    runs on another machine, so A's process id means nothing to it) finds the trial without heartbeats after
    the grace period, marks it failed and runs its parameters again."""
    n_trials = 3
    search = {
        **SEARCH,
        "n_trials": n_trials,
        "pruner": "none",
        "sampler": "random",
        "study_name": "heartbeat",
        "heartbeat_interval": 1,
        "grace_period": 4,
    }
    configs = [
        write_config(tmp_path / f"worker{k}", data_root, search=search, num_train_epochs=2) for k in range(2)
    ]
    log = tmp_path / "killed.log"
    killed = start_worker(configs[0], log, "--storage", postgres_url)
    try:
        deadline = time.time() + 120
        dead = None
        while dead is None:  # kill it once its first trial has sampled all of its parameters
            assert killed.poll() is None, f"the worker ended before it was killed:\n{log.read_text()[-3000:]}"
            assert time.time() < deadline, f"no trial started in time:\n{log.read_text()[-3000:]}"
            if postgres_study_exists(postgres_url, "heartbeat"):
                running = [t for t in load_trials(postgres_url, "heartbeat") if t.state == TrialState.RUNNING]
                if running and set(running[0].params) == set(SEARCH["space"]):
                    dead = running[0]
            time.sleep(0.2)
        killed.send_signal(signal.SIGKILL)
        killed.wait(timeout=30)
    finally:
        killed.kill()
        killed.wait()

    monkeypatch.setattr("ast_dora.search.worker.socket.gethostname", lambda: "another-machine")
    started = time.time()
    main(["--config", configs[1], "--storage", postgres_url])

    trials = {t.number: t for t in load_trials(postgres_url, "heartbeat")}
    assert trials[dead.number].state == TrialState.FAIL, "the dead trial is marked failed"
    finished = [t for t in trials.values() if t.state in FINISHED]
    assert len(finished) == n_trials, [(t.number, t.state) for t in trials.values()]
    retries = [t for t in trials.values() if t.user_attrs.get("retry_of") == dead.number]
    assert len(retries) == 1 and retries[0].state in FINISHED, "its parameters ran again, once"
    assert retries[0].params == dead.params
    assert retries[0].user_attrs["worker"]["host"] == "another-machine"
    assert retries[0].datetime_start.timestamp() >= started, "re-run by the surviving worker"
    # None ran twice to completion: every finished trial has parameters of its own.
    assert len({tuple(sorted(t.params.items())) for t in finished}) == n_trials
    assert all(t.state != TrialState.RUNNING for t in trials.values())

    rows = read_trials_csv(tmp_path / "worker1" / "out")
    assert rows[dead.number]["state"] == "FAIL"
    assert "stopped sending heartbeats" in rows[dead.number]["user_attrs_fail_reason"]
    assert rows[dead.number]["retried_as"] == str(retries[0].number)
    assert rows[retries[0].number]["user_attrs_retry_of"] == str(dead.number)


@pytest.mark.slow
def test_two_worker_processes_share_a_journal_study(tmp_path, data_root, caplog):
    """`search.workers: 2` with no storage: two worker processes on Optuna's journal file in output_dir, each on
    one of the two cores, 6 trials between them and none lost or run twice; the same command again finds that
    study (complete, so it starts no workers) instead of starting another."""
    n_trials = 6
    search = {**SEARCH, "n_trials": n_trials, "pruner": "none", "workers": 2}
    config = write_config(tmp_path, data_root, search=search, num_train_epochs=1)
    output_dir = tmp_path / "out"

    metrics = main(["--config", config])

    journal = output_dir / "study.journal"
    assert journal.is_file() and not (output_dir / "study.db").exists()
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))
    trials = load_trials(storage, "out")
    finished = [t for t in trials if t.state in FINISHED]
    assert len(finished) == n_trials and metrics["trials_complete"] + metrics["trials_pruned"] == n_trials
    assert len({t.number for t in trials}) == len(trials), "trial numbers are unique"
    assert all("skipped" in t.user_attrs for t in trials if t.state not in FINISHED), "no trial lost"
    assert len({tuple(sorted(t.params.items())) for t in finished}) == n_trials, "no trial run twice"
    pids = {t.user_attrs["worker"]["pid"] for t in finished}
    assert len(pids) == 2 and os.getpid() not in pids, "two worker processes, not this one"
    assert (output_dir / "best_config.yaml").is_file()
    assert read_trials_csv(output_dir).keys() == {t.number for t in trials}

    with caplog.at_level(logging.INFO):
        main(["--config", config])

    again = load_trials(storage, "out")
    assert [(t.number, t.state, t.value) for t in again] == [(t.number, t.state, t.value) for t in trials]
    assert "already holds its 6 finished trials: no workers to start" in caplog.text


def test_worker_processes_get_a_gpu_each_round_robin_or_a_share_of_the_cores(monkeypatch):
    from ast_dora.search import processes

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    monkeypatch.setattr(processes.os, "sched_getaffinity", lambda pid: set(range(8)))
    monkeypatch.setattr(processes, "visible_gpus", lambda: ["3", "5"])
    on_gpus = processes.worker_environments(3, use_cpu=False)
    assert [env["CUDA_VISIBLE_DEVICES"] for env in on_gpus] == ["3", "5", "3"]
    assert [env["AST_DORA_SEARCH_WORKER"] for env in on_gpus] == ["0/3", "1/3", "2/3"]
    assert {env["OMP_NUM_THREADS"] for env in on_gpus} == {"2"}  # 8 cores // 3 workers

    monkeypatch.setattr(processes, "visible_gpus", lambda: [])
    on_cpu = processes.worker_environments(2, use_cpu=True)
    assert [env["OMP_NUM_THREADS"] for env in on_cpu] == ["4", "4"]
    assert all(env.get("CUDA_VISIBLE_DEVICES") == os.environ.get("CUDA_VISIBLE_DEVICES") for env in on_cpu)


def test_default_storage_of_several_workers_is_the_journal(tmp_path):
    journal = (tmp_path / "out" / "study.journal").resolve()
    assert settings_for(tmp_path, workers=2).storage == f"journal:///{journal}"
    assert settings_for(tmp_path, workers=2).journal_file == journal
    assert settings_for(tmp_path).storage.startswith("sqlite:///"), "one worker keeps the SQLite default"
    with pytest.raises(ConfigError, match="must be a positive whole number"):
        settings_for(tmp_path, workers=0)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "study.db").touch()
    with pytest.raises(ConfigError, match="SQLite is not safe for 2 worker processes"):
        settings_for(tmp_path, workers=2)
    journal.touch()
    assert settings_for(tmp_path).storage == f"journal:///{journal}", "one worker continues a journal study"


def test_workers_on_the_command_line(tmp_path):
    path = write_config(tmp_path, tmp_path)
    assert parse_config(["--config", path, "--workers", "3"]).search["workers"] == 3
    with pytest.raises(ConfigError, match="--workers 'two' must be a whole number"):
        parse_config(["--config", path, "--workers", "two"])
    training_only = write_config(tmp_path / "training", tmp_path, search=None)
    with pytest.raises(ConfigError, match="--workers applies to an Optuna search"):
        parse_config(["--config", training_only, "--workers", "2"])
