"""arcade-lab: one runner, many plugins, for deep RL and generative models."""

__version__ = "0.1.0"
