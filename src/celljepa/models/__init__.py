"""Models: baselines, the JEPA encoder and the transition predictors (pure nn.Modules plus AnnData-aware wrappers)."""
