"""`random`: uniformly random actions. The smallest real agent, and the reference score
(`eval/return_mean` of a random policy) for random-normalised Atari results."""

from __future__ import annotations

from dataclasses import dataclass

import gymnasium as gym
import torch

from lab.api import Agent, hookimpl, option


@dataclass
class RandomConfig:
    num_envs: int = option(1, "parallel environments")

    def __post_init__(self) -> None:
        if self.num_envs < 1:
            raise ValueError(f"--num-envs must be >= 1, got {self.num_envs}")


def sample_actions(space: gym.Space, n: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """n uniform samples of a Discrete or bounded Box action space, drawn on `device`."""
    if isinstance(space, gym.spaces.Discrete):
        return torch.randint(int(space.start), int(space.start + space.n), (n,), generator=generator, device=device)
    if isinstance(space, gym.spaces.Box) and space.is_bounded():
        low = torch.as_tensor(space.low, dtype=torch.float32, device=device)
        high = torch.as_tensor(space.high, dtype=torch.float32, device=device)
        return low + (high - low) * torch.rand((n, *space.shape), generator=generator, device=device)
    raise TypeError(f"the random agent cannot sample from {space}")


class RandomAgent(Agent):
    """Uniformly random actions (the reference score for normalised results)."""

    name = "random"
    Config = RandomConfig
    default_steps = 10_000

    @classmethod
    def step_multiple(cls, config: RandomConfig) -> int:
        return config.num_envs

    def __init__(self, config: RandomConfig, ctx) -> None:
        super().__init__(config, ctx)
        self.envs = ctx.make_env(num_envs=config.num_envs)
        self.envs.reset(seed=ctx.seed)
        self.rng = ctx.generator("actions")  # the runner saves and restores it

    def act(self, obs: torch.Tensor, deterministic: bool = True) -> torch.Tensor:
        rng = self.ctx.rng.eval_generator() if deterministic else self.rng
        return sample_actions(self.envs.single_action_space, obs.shape[0], rng, self.ctx.device)

    def train_step(self) -> dict[str, float]:
        self.envs.step(self.act(self.envs.obs, deterministic=False))
        self.global_step += self.envs.num_envs
        return {}

    def close(self) -> None:
        self.envs.close()


@hookimpl
def register_algorithms(register) -> None:
    register(RandomAgent)
