"""Training loops: optimisation, checkpoints that resume, distributed data parallel."""
