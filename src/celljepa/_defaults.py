"""Step-count defaults that differ by purpose, in one place (no imports: the command line reads them for --help).

The JEPA encoder's own default, ``JEPAConfig.train.max_steps = 2000``, is for pretraining one encoder on a
whole dataset (``cj.tl.jepa_embed``, ``celljepa pretrain``). The others are shorter on purpose:
"""

#: ``train.max_steps`` of each fold's encoder in ``celljepa benchmark`` / ``holdout`` (a fold's encoder sees a
#: few thousand cells and one is trained per fold and model seed).
BENCHMARK_JEPA_STEPS = 400
#: ``train.max_steps`` of ``celljepa pretrain --fast-dev`` (a smoke run of the whole pipeline).
FAST_DEV_JEPA_STEPS = 20
