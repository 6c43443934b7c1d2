"""The entry point of `finetune/run.py`: one config in, a training run or an Optuna search out.

python finetune/run.py --config configs/smoke_vit_hybrid.yaml           # training (ast_dora.training)
python finetune/run.py --config configs/hpo_smoke_vit_hybrid.yaml       # a `search:` section: ast_dora.search
python finetune/run.py --config ... --split folds --cross_validate true  # every fold: ast_dora.cross_validation
"""

from __future__ import annotations

import logging
from typing import Any

from .config import build_parser, parse_config
from .training import prepare, train

logger = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    run = parse_config(argv)
    if run.data.cross_validate:
        from .cross_validation import run_cross_validation

        return run_cross_validation(run)
    if not run.search:
        return train(run, prepare(run))
    from .search import parse_search_settings, run_search

    parse_search_settings(run)  # a bad search: section fails here, before any data is prepared
    prepared = prepare(run)
    if prepared.push_to_hub:
        logger.warning(
            "push_to_hub is ignored by a search: push the run you pick with `python -m ast_dora.hub push`."
        )
    return run_search(run, prepared.data, prepared.feature_extractor)


__all__ = ["build_parser", "main"]

if __name__ == "__main__":
    main()  # `python -m ast_dora.cli ...`: how a search starts its worker processes (ast_dora.search.processes)
