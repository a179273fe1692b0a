"""`huber-pg`: a policy-gradient agent written as its loss, which also trains as a population
(`lab train huber-pg --env CartPole-v1 --seeds 1-8 --vectorize`) without a line of its own."""

import torch

from lab.api import hookimpl
from lab.buffers.rollout import RolloutBatch
from lab.rl.onpolicy import OnPolicyAgent, OnPolicyConfig, UpdatePlan
from lab.rl.policies import ActorCritic


class HuberPG(OnPolicyAgent):
    """Vanilla policy gradient with a Huber value loss: four passes of minibatches of 64."""

    name = "huber-pg"
    Config = OnPolicyConfig

    def update_plan(self) -> UpdatePlan:
        return UpdatePlan(epochs=4, batch_size=64)

    def loss(self, policy: ActorCritic, batch: RolloutBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        out, values = policy(batch.observations)  # the policy given: in a population, every member's
        advantages = batch.standardized(batch.advantages)
        policy_loss = -batch.mean(advantages * policy.log_prob(out, batch.actions))
        value_loss = batch.mean(torch.nn.functional.huber_loss(values, batch.returns, reduction="none"))
        return policy_loss + 0.5 * value_loss, {"policy_loss": policy_loss, "value_loss": value_loss}


@hookimpl
def register_algorithms(register) -> None:
    register(HuberPG)
