"""The project's models. Each folder is one model; registering its `ModelSpec` here is what makes it trainable
(`model_type` in configs), searchable, loadable, pushable and servable. See docs/architecture.md."""

from .ast_mlp.spec import SPEC as AST_DORA
from .genre_vit_hybrid.spec import SPEC as VIT_HYBRID
from .mfcc_baseline.spec import SPEC as MFCC_BASELINE
from .musicnn.spec import SPEC as MUSICNN
from .registry import *  # noqa: F403 (the registry's API is the package's)
from .registry import register_model

register_model(VIT_HYBRID)  # the first registered is the default model_type
register_model(AST_DORA)
register_model(MFCC_BASELINE)
register_model(MUSICNN)
