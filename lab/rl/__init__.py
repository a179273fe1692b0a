"""Reinforcement-learning building blocks agents share: the on-policy service (rollout loop,
GAE, normalisation), actor-critic policies and the evaluation protocol."""
