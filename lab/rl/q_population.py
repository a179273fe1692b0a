"""Seeds as a batch dimension for the DQN family: a population of Q-learning agents.

As for the on-policy family (`lab.rl.population`), each member is an ordinary agent built by
its own run's session, with its own envs, replay buffer, random streams, epsilon schedule
and counters, exactly as in a separate run; what the members share is the arithmetic. Their
online and target Q-networks are stacked member first (`StackedQNetwork`: the members'
`QNetwork`s as one, with batched products and, for frames, a convolution per member on a
CPU or grouped ones elsewhere), and one Adam step updates every member, each with its own
gradient clipping.

A training step is the agent's own (`OffPolicyAgent.train_step`) taken for all members at
once: every member draws its epsilon-greedy actions from its own stream and the greedy ones
come from one stacked pass; each steps and stores into its own replay; then each gradient
step samples every member's batch from its own replay (its own DrQ shifts), and the agent's
own `td_loss`, written for any leading dimensions, computes every member's loss in one pass.
Prioritized replay's priorities go back to each member's replay, targets are updated by each
member's own schedule (its target network's parameters are views of stacked rows too).

Measured on the project's AMD EPYC (`bench/population_step.py`, two threads): the Atari
Nature-CNN gradient step at batch 32 is compute-bound on a CPU, and stacked it takes about
the same time per member as separately (0.8-0.9x); populations of it pay on a GPU, where a
batch-32 step is mostly kernel launches. Noisy nets and distributional heads (`rainbow`,
the `atari100k` preset) are not stacked yet.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any, cast

import torch

from lab.api import LabError
from lab.device import torch_threads
from lab.rl.offpolicy import OffPolicyAgent, mean_metrics
from lab.rl.population import OptimizerKind, StackedLayers, check_settings, settings_view, stack_parameters
from lab.rl.qnetworks import QNetwork, epsilon_draws

# What a member of the DQN family must keep as `dqn` has it for the population to step it.
OWN_METHODS = ("td_loss", "gradient_step", "exploration_action", "epsilon_greedy", "make_q_network", "collect",
               "train_step")


class StackedQNetwork(StackedLayers):
    """The members' `QNetwork`s as one: `outputs` and `__call__` on observations
    [members, batch, ...], giving [members, batch, actions]."""

    def __init__(self, template: QNetwork, params: dict[str, torch.Tensor]) -> None:
        super().__init__(params)
        self.template = template
        self.head = template.head

    def outputs(self, obs: torch.Tensor) -> torch.Tensor:
        """Q-values [members, batch, actions], as `QNetwork.outputs` for each member."""
        net = self.template
        x = self.frames(obs) if net.images else obs.float().flatten(2)
        features = self.apply(net.torso, "torso", x)
        advantage = self.apply(net.advantage, "advantage", features)
        if net.value is None:
            return advantage
        value = self.apply(net.value, "value", features)
        return value + advantage - advantage.mean(dim=-1, keepdim=True)

    def q_values(self, outputs: torch.Tensor) -> torch.Tensor:
        return self.head.q_values(outputs)

    def __call__(self, obs: torch.Tensor) -> torch.Tensor:
        return self.q_values(self.outputs(obs))


class QPopulation:
    """The members' DQN agents, stacked; `train_step` is one training step of every member."""

    def __init__(self, members: Sequence[Any], update_threads: int = 1) -> None:
        for member in members:
            self.check_member(member)
        check_settings(members, lambda agent: agent.q)
        self.update_threads = update_threads
        self.kind = OptimizerKind.of_members([m.optimizer for m in members], members[0].name)
        self.members = list(members)
        self.restack()

    @staticmethod
    def check_class(algo_cls: type) -> None:
        """One line when `algo_cls` replaces what the population steps for it."""
        owner = next(klass for klass in algo_cls.__mro__ if "population" in vars(klass))
        for klass in algo_cls.__mro__:
            if klass is owner:
                break
            replaced = [name for name in OWN_METHODS if name in vars(klass)]
            if replaced:
                raise LabError(f"{algo_cls.name} replaces {owner.name}'s {replaced[0]}(), which --vectorize steps "
                               f"for all members as {owner.name} writes it: drop --vectorize to run its seeds as "
                               "separate processes")

    @staticmethod
    def check_member(agent: Any) -> None:
        """One line for settings the population does not stack (before the others are built)."""
        c = agent.config
        if c.noisy or c.distributional != "none":
            raise LabError(f"--vectorize stacks {agent.name} without noisy nets and distributional heads; this run "
                           f"has {'--noisy' if c.noisy else '--distributional ' + c.distributional} (rainbow and the "
                           "atari100k preset do): use --preset atari100k-drq, or drop --vectorize")

    @staticmethod
    def member_bytes(agent: Any) -> int:
        """What one member adds besides its envs: its replay and its weights five times (online,
        target, gradients, two Adam moments)."""
        weights = sum(p.numel() * p.element_size() for p in agent.q.parameters())
        return agent.buffer.storage_bytes + 5 * weights

    def restack(self, keep: Sequence[int] | None = None) -> None:
        """Stack the members' online and target networks and Adam states (only those at `keep`:
        a member left, having diverged), each member's tensors views of the rows."""
        if keep is not None:
            self.members = [self.members[i] for i in keep]
        members = self.members
        params, optimizer = stack_parameters([m.q for m in members], [m.optimizer for m in members], self.kind)
        assert optimizer is not None
        targets, _ = stack_parameters([m.q_target for m in members], [], None)
        self.optimizer, self.leaves = optimizer, list(params.values())
        self.q = StackedQNetwork(members[0].q, params)
        self.q_target = StackedQNetwork(members[0].q_target, {n: t.detach() for n, t in targets.items()})
        # whose td_loss computes every member's: dqn's float settings are fixed, so built once here
        self.loss_view = copy.copy(settings_view(members, optimizer.flat.device))
        self.loss_view.q, self.loss_view.q_target = self.q, self.q_target

    # ---------------------------------------------------------------- acting

    def actions(self) -> list[torch.Tensor]:
        """Every member's actions for its next vector step, drawn from its own streams as its
        own run draws them; the greedy ones from one stacked pass over all the members."""
        plans: list[torch.Tensor | tuple[torch.Tensor, torch.Tensor]] = []  # an action, or (random, explore)
        for member in self.members:
            n = member.env.num_envs
            if member.global_step < member.config.learning_starts:
                plans.append(member.random_actions(n))
                continue
            random_actions, explore = epsilon_draws(n, member.num_actions, member.epsilon(), member.action_generator,
                                                    member.obs.device)
            plans.append(random_actions if explore is None else (random_actions, explore))
        if all(isinstance(plan, torch.Tensor) for plan in plans):
            return cast(list[torch.Tensor], plans)
        with torch.no_grad():
            greedy = self.q(torch.stack([m.obs for m in self.members])).argmax(dim=-1)
        return [plan if isinstance(plan, torch.Tensor) else torch.where(plan[1], plan[0], greedy[k])
                for k, plan in enumerate(plans)]

    # -------------------------------------------------------------- learning

    def gradient_step(self) -> list[dict[str, torch.Tensor]]:
        """One gradient step of every member: its own batch from its own replay, one stacked
        loss, one Adam step (each member's gradient clipped by its own norm)."""
        members, first = self.members, self.members[0]
        batches = [m.buffer.sample(m.config.batch_size, beta=m.replay_beta()) for m in members]
        observations = torch.stack([m.augmented(b.observations) if m.augment_generator is not None
                                    else b.observations for m, b in zip(members, batches, strict=True)])
        next_observations = torch.stack([m.augmented(b.next_observations) if m.augment_generator is not None
                                         else b.next_observations for m, b in zip(members, batches, strict=True)])

        def field(name: str) -> torch.Tensor:
            return torch.stack([getattr(b, name) for b in batches])

        losses, priorities = self.loss_view.td_loss(observations, field("actions"), field("rewards"), field("discounts"),
                                          field("dones"), next_observations, field("weights"))
        grads = torch.autograd.grad(losses.sum(), self.leaves)
        device = self.optimizer.flat.device
        self.optimizer.step(torch.cat([g.reshape(len(members), -1) for g in grads], 1),
                            torch.ones(len(members), dtype=torch.bool, device=device),
                            torch.tensor([m.config.learning_rate for m in members], device=device),
                            torch.tensor([m.config.max_grad_norm for m in members], device=device))
        for k, (member, batch) in enumerate(zip(members, batches, strict=True)):
            if first.config.prioritized_replay:
                member.buffer.update_priorities(batch.indices, priorities[k])
        return [{"train/loss": losses[k].detach()} for k in range(len(members))]

    def train_step(self) -> list[dict[str, Any]]:
        """One training step of every member, as each agent's `train_step` takes it; each
        member's metrics."""
        members: list[OffPolicyAgent] = self.members
        metrics: list[dict[str, Any]] = [m.progress_metrics() for m in members]
        for member, actions in zip(members, self.actions(), strict=True):
            member.step_envs(actions)
        befores = [m.advance() for m in members]
        steps: list[list[dict[str, torch.Tensor]]] = [[] for _ in members]
        with torch_threads(self.update_threads):
            for _ in range(members[0].gradient_steps_due(befores[0])):
                members[0].ctx.check_stop()
                for k, step in enumerate(self.gradient_step()):
                    steps[k].append(step)
        for k, member in enumerate(members):
            metrics[k].update(mean_metrics(steps[k]))
            member.after_training_step(befores[k])
        return metrics
