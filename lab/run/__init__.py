"""The run loop and the run folder: a Session trains one run (lab.run.session), the entry points
(train, resume, eval, load), plugin discovery and the registry, the context handed to
algorithms, checkpoints, signals, progress, seeds and compile."""
