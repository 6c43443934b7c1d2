"""`python -m ast_dora.bench data` on a tiny folder (AST features only, so it does not depend on the ViT-hybrid)."""

import json

from conftest import make_gtzan_folder

from ast_dora.bench import available_benchmarks, main


def test_dispatcher_lists_data():
    assert "data" in available_benchmarks()


def test_data_benchmark_writes_table_and_json(tmp_path, capsys):
    root = make_gtzan_folder(tmp_path / "g", tracks_per_genre=1, seconds=11.0)
    out = tmp_path / "bench.json"
    result = main(
        [
            "data",
            "--data_dir",
            str(root),
            "--models",
            "ast",
            "--num_proc",
            "1",
            "--decode_sample",
            "3",
            "--json",
            str(out),
        ]
    )
    table = capsys.readouterr().out
    assert "1st pass s" in table and "ast" in table
    written = json.loads(out.read_text())
    ast = written["models"]["ast"]
    assert ast["clips"] == 10 and ast["windows"] == 20 and ast["input_values_shape"] == [1024, 128]
    assert ast["cached_pass"]["cache_hits"] == {"features": True}
    assert ast["first_pass"]["x_realtime"] > 0 and ast["cached_pass"]["speedup_vs_first"] > 1
    assert result["models"]["ast"]["clips"] == 10
