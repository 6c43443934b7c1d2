"""The two genre models: the from-scratch ViT-hybrid and AST with an MLP head (DoRA-adapted in training)."""
