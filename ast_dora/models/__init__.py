"""The project's models. Each folder is one model; registering its `ModelSpec` here is what makes it trainable
(`model_type` in configs), searchable, loadable, pushable and servable. See docs/architecture.md."""

from .ast_mlp.spec import SPEC as AST_DORA
from .genre_vit_hybrid.spec import SPEC as VIT_HYBRID
from .registry import (
    GPUCheckSettings,
    ModelSpec,
    base_model_of,
    get_model_spec,
    model_types,
    register_model,
    spec_for_config,
    spec_for_model,
)

register_model(VIT_HYBRID)  # the first registered is the default model_type
register_model(AST_DORA)

__all__ = [
    "GPUCheckSettings",
    "ModelSpec",
    "base_model_of",
    "get_model_spec",
    "model_types",
    "register_model",
    "spec_for_config",
    "spec_for_model",
]
