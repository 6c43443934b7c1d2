"""Tagging a whole library (`python -m ast_dora.tag`): the walk (`walk`), the results database (`store`), the
decode workers and the model batched across songs (`engine`), the summary and chart (`report`), the genre
written into the files (`file_tags`) and the Ray Data pipeline (`ray_pipeline`, optional: `pip install -e
".[cluster]"`). Nothing here imports Ray or mutagen until it is used."""
