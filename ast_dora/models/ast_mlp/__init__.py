import importlib.util

# Without torch installed (song analysis on an exported model) there is no model class to register; the spec
# (`spec.py`) imports it only when a model is built or loaded.
if importlib.util.find_spec("torch") is not None:
    from .modeling_ast_mlp import ASTGenreMLPHead, ASTWithMLPHeadForAudioClassification

    # `save_pretrained` then copies modeling_ast_mlp.py next to the weights and writes `auto_map` into config.json,
    # so a saved model loads without this project:
    # `AutoModelForAudioClassification.from_pretrained(path, trust_remote_code=True)`.
    ASTWithMLPHeadForAudioClassification.register_for_auto_class("AutoModelForAudioClassification")

__all__ = ["ASTGenreMLPHead", "ASTWithMLPHeadForAudioClassification"]
