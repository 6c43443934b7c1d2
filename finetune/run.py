#!/usr/bin/env python
"""Train, evaluate and save a genre classifier (or run an Optuna search) from one YAML config.

    python finetune/run.py --config configs/smoke_vit_hybrid.yaml
    accelerate launch finetune/run.py --config configs/ast_dora.yaml --learning_rate 1e-4

Every config field can be overridden on the command line; see `--help` for the fields.
"""

import sys

from ast_dora.cli import main
from ast_dora.config import ConfigError
from ast_dora.data.sources import DataSourceError
from ast_dora.errors import MissingComponentError

if __name__ == "__main__":
    # Each carries a message written for the user (what was wrong, what to do): a traceback would only bury it.
    try:
        main()
    except ConfigError as error:
        sys.exit(f"Config error: {error}")
    except DataSourceError as error:
        sys.exit(f"Data error: {error}")
    except MissingComponentError as error:
        sys.exit(f"Missing: {error}")
