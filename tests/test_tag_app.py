"""The app's Library view over a results file of `python -m ast_dora.tag`: the filter by genre and probability,
the row picked -> the song to hear, re-analysis through the demo's own analysis."""

from __future__ import annotations

import gradio as gr
import pytest
from song_fixtures import load_app_module, save_tiny_model
from test_tag import song

from ast_dora import tag
from ast_dora.inference import GenreClassifier
from ast_dora.tagging.library import ALL, ERRORS, Library


@pytest.fixture(scope="module")
def tagged(tmp_path_factory):
    root = tmp_path_factory.mktemp("tag_app")
    model = save_tiny_model("vit_hybrid", root / "model")
    for i in range(5):
        song(root / "lib" / ("a" if i < 3 else "b/c") / f"s{i}.wav", 2.0 + i, freq=150 + 120 * i)
    (root / "lib" / "broken.mp3").write_bytes(b"no audio" * 40)
    db = root / "music.db"
    assert (
        tag.main(
            [
                str(root / "lib"),
                "--model",
                str(model),
                "--output",
                str(db),
                "--workers",
                "0",
                "--backend",
                "torch",
                "--quiet",
                "--chart",
                "none",
            ]
        )
        == 1
    )
    return model, db, root


def test_library_filters_by_genre_and_probability(tagged):
    _, db, root = tagged
    shelf = Library(db)
    assert shelf.summary["songs"] == 5 and shelf.summary["errors"] == 1
    everything = shelf.select()
    assert len(everything) == 5
    assert [r["confidence"] for r in everything] == sorted(
        (r["confidence"] for r in everything), reverse=True
    )
    genre = everything[0]["genre"]
    assert all(r["genre"] == genre for r in shelf.select(genre)) and shelf.select(genre)
    threshold = everything[2]["confidence"]
    assert len(shelf.select(ALL, threshold)) == 3
    assert [r["path"] for r in shelf.select(ERRORS)] == [str(root / "lib" / "broken.mp3")]
    assert shelf.folders() == [str(root / "lib")]
    assert ERRORS in shelf.choices() and genre in shelf.choices()


def test_library_view_picks_plays_and_reanalyses(tagged):
    model, db, _ = tagged
    app = load_app_module()
    classifiers = {str(model): GenreClassifier.from_pretrained(model, bf16=False)}
    demo = app.build_demo(classifiers, library=str(db))
    functions = {block_fn.name: block_fn.fn for block_fn in demo.fns.values()}
    table, paths = functions["refilter"](ALL, 0.0)
    assert len(table) == len(paths) == 5 and table[0][0] == paths[0].rsplit("/", 1)[1]
    picked = functions["pick"](paths, gr.SelectData(None, {"index": [2, 1], "value": table[2][1]}))
    assert picked == paths[2]
    results = list(functions["analyse"](picked, str(model)))
    details = results[-1][2]
    assert (
        details["genre"] == Library(db).select()[2]["genre"]
        and details["windows_done"] == details["windows_planned"]
    )
