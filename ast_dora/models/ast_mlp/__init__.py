from .modeling_ast_mlp import ASTGenreMLPHead, ASTWithMLPHeadForAudioClassification

__all__ = ["ASTGenreMLPHead", "ASTWithMLPHeadForAudioClassification"]
