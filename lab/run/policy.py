"""A trained agent as a user acts with it: what `lab.load(run)` returns for an agent.

Inside the lab an agent's `act` takes a batch of tensors on the run's device and nothing
else (`lab.api.Agent`). A user holds other things: a numpy observation from their own env,
one observation rather than a batch, a tensor on another device. `AgentPolicy` converts
them, as SB3's `predict` does, so that conversion lives in one place and never inside the
plugin contract.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from lab.api import Agent


class AgentPolicy:
    """`act(obs)` for what a user holds; everything else (`evaluate()`, `global_step`, the
    networks, `close()`) is the trained agent's own, reached through this object or `.agent`."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent

    def __getattr__(self, name: str) -> Any:
        return getattr(self.agent, name)

    def act(self, obs: np.ndarray | torch.Tensor, deterministic: bool = True) -> np.ndarray | torch.Tensor:
        """Actions for one observation or a batch, as a numpy array or a tensor on any device;
        they come back the same way (numpy for numpy, one action for one observation, on the
        observation's device)."""
        shape = tuple(self.agent.ctx.observation_space().shape or ())
        from_numpy = not isinstance(obs, torch.Tensor)
        tensor = obs if isinstance(obs, torch.Tensor) else torch.as_tensor(np.asarray(obs))
        if tensor.is_floating_point() and tensor.dtype != torch.float32:
            tensor = tensor.float()
        single = tensor.dim() == len(shape)
        if not single and tensor.dim() != len(shape) + 1:
            raise ValueError(f"act() takes one observation of shape {shape} or a batch of them; "
                             f"got shape {tuple(tensor.shape)}")
        batch = tensor.to(self.agent.ctx.device)
        with torch.no_grad():
            actions = self.agent.act(batch.unsqueeze(0) if single else batch, deterministic)
        actions = actions[0] if single else actions
        return actions.cpu().numpy() if from_numpy else actions.to(tensor.device)

    def predict(self, observation: np.ndarray | torch.Tensor, state: Any = None, episode_start: Any = None,
                deterministic: bool = True) -> tuple[np.ndarray | torch.Tensor, Any]:
        """SB3's `predict`: (actions, state). These agents keep no state between steps, so
        `state` comes back as given and `episode_start` changes nothing."""
        return self.act(observation, deterministic), state
