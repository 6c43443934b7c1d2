"""AST with an MLP head and DoRA adapters. The modeling module (torch) is imported when one of its classes is
first asked for (`ast_dora.models.ast_mlp.ASTWithMLPHeadForAudioClassification`), not with the package: song
analysis on an exported model imports the spec and the numpy fbank only, never torch."""

import importlib

_MODELING = {
    "ASTGenreMLPHead": "modeling_ast_mlp",
    "ASTWithMLPHeadForAudioClassification": "modeling_ast_mlp",
}


def __getattr__(name: str):
    if name in _MODELING:
        return getattr(importlib.import_module(f".{_MODELING[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["ASTGenreMLPHead", "ASTWithMLPHeadForAudioClassification"]
