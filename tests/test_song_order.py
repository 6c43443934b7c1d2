"""Song analysis visits windows coarse to fine (each streamed partial result samples the whole song) and
`max_windows` analyses only evenly spread windows; the final answer is the one of the sequential order."""

import json

import numpy as np
import pytest
from song_fixtures import generated_wav, save_tiny_model

from ast_dora import predict
from ast_dora.genre_classification.song_windows import coarse_to_fine, spread_windows, visiting_order
from ast_dora.inference import GenreClassifier


@pytest.fixture(scope="module")
def vit_dir(tmp_path_factory):
    return save_tiny_model("vit_hybrid", tmp_path_factory.mktemp("order_models") / "vit_hybrid")


@pytest.fixture(scope="module")
def song(tmp_path_factory):
    return generated_wav(
        tmp_path_factory.mktemp("order_song") / "song.wav", 40.0, genre="jazz"
    )  # 10 windows of 4 s, back to back


@pytest.mark.parametrize("n", [1, 2, 3, 7, 14, 33])
def test_coarse_to_fine_is_a_permutation_starting_in_the_middle(n):
    order = coarse_to_fine(n)
    assert sorted(order.tolist()) == list(range(n)) and order[0] == n // 2
    # every prefix of 2^k - 1 items leaves no gap longer than about n / 2^k
    for k in range(1, int(np.log2(n + 1)) + 1):
        prefix = np.sort(order[: 2**k - 1])
        gaps = np.diff(np.concatenate([[-1], prefix, [n]]))
        assert gaps.max() <= n / 2**k + 1


def test_spread_windows_are_the_middles_of_equal_stretches():
    assert spread_windows(14, 2).tolist() == [3, 10]
    assert spread_windows(10, 5).tolist() == [1, 3, 5, 7, 9]
    assert spread_windows(20, 1).tolist() == [10]
    assert spread_windows(5, 9).tolist() == [0, 1, 2, 3, 4] == spread_windows(5).tolist()
    for n, k in [(7, 6), (100, 7), (13, 13)]:
        chosen = spread_windows(n, k)
        assert len(set(chosen.tolist())) == k and np.all(np.diff(chosen) > 0)
    with pytest.raises(ValueError, match="at least 1"):
        spread_windows(5, 0)
    assert sorted(visiting_order(20, 4).tolist()) == spread_windows(20, 4).tolist()


def test_coarse_to_fine_final_equals_sequential_and_first_partial_spans_the_song(vit_dir, song, monkeypatch):
    classifier = GenreClassifier.from_pretrained(vit_dir, bf16=False, batch_size=4, first_batch_size=2)
    partials = list(classifier.analyse_iter(song))
    final = partials[-1]
    assert final.complete and final.windows_done == final.windows_total == 10
    first = partials[0]
    assert first.windows_done == 2 and not first.complete
    # the first partial result holds windows of both halves of the song
    centres = (first.window_starts + first.window_ends) / 2
    assert centres.min() < final.duration / 2 < centres.max()
    # each partial's windows in time order
    assert all(np.all(np.diff(p.window_starts) > 0) for p in partials)

    # the sequential order (what analysis did before): same windows, same mean
    import ast_dora.inference as inference

    monkeypatch.setattr(inference, "visiting_order", lambda n, max_windows=None: np.arange(n))
    sequential = classifier.analyse(song)
    monkeypatch.undo()
    np.testing.assert_array_equal(final.window_starts, sequential.window_starts)
    np.testing.assert_allclose(final.window_probabilities, sequential.window_probabilities, atol=1e-6)
    np.testing.assert_allclose(final.probabilities, sequential.probabilities, atol=1e-6)
    assert final.vote == sequential.vote


def test_max_windows_analyses_exactly_the_evenly_spread_windows(vit_dir, song, tmp_path, capsys):
    classifier = GenreClassifier.from_pretrained(vit_dir, bf16=False)
    whole = classifier.analyse(song)
    sampled = classifier.analyse(song, max_windows=5)
    chosen = spread_windows(10, 5)
    assert sampled.complete and (sampled.windows_done, sampled.windows_total) == (5, 10)
    np.testing.assert_array_equal(sampled.window_starts, whole.window_starts[chosen])
    np.testing.assert_allclose(sampled.window_probabilities, whole.window_probabilities[chosen], atol=1e-6)
    np.testing.assert_allclose(
        sampled.probabilities, whole.window_probabilities[chosen].mean(axis=0), atol=1e-6
    )
    data = sampled.to_dict()
    assert (data["windows_analysed"], data["windows_total"]) == (5, 10) and len(data["segments"]) == 5

    assert (
        predict.main(
            [str(song), "--model", str(vit_dir), "--json", "--max_windows", "3", "--no_bf16", "--quiet"]
        )
        == 0
    )
    (row,) = json.loads(capsys.readouterr().out)
    assert (row["windows_analysed"], row["windows_total"]) == (3, 10)
    assert [s["start"] for s in row["segments"]] == pytest.approx(
        whole.window_starts[spread_windows(10, 3)].tolist()
    )
    with pytest.raises(SystemExit):
        predict.main([str(song), "--model", str(vit_dir), "--max_windows", "0"])
    with pytest.raises(ValueError, match="max_windows"):
        GenreClassifier.from_pretrained(vit_dir, max_windows=0)


def test_app_reads_max_windows_from_the_environment(monkeypatch):
    from song_fixtures import load_app_module

    app = load_app_module()
    assert app.parse_args([]).max_windows == 0
    monkeypatch.setenv("GENRE_MAX_WINDOWS", "12")
    assert app.parse_args([]).max_windows == 12
    assert app.parse_args(["--max_windows", "4"]).max_windows == 4
