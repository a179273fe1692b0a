"""Seeds as a batch dimension: a population of on-policy agents trained as one stacked network.

Each member is an ordinary agent (`OnPolicyAgent`) built by its own run's session: its envs,
normaliser, rollout buffer, random streams and schedules are its own, exactly as in a
separate run. What the members share is the arithmetic. Their policies' parameters are
stacked, member first, in one flat tensor, and each member's parameters and optimizer state
become views of it. `StackedPolicy` is the members' `ActorCritic` with that member dimension:
linear layers are batched matrix products (`baddbmm`) and convolutions grouped ones, one op
for all the members. The algorithm's own `loss` runs unchanged on it, on minibatches shaped
[members, transitions] (`RolloutBatch.mean` reduces over the transitions), and one optimizer
step updates every member.

Why not `torch.func.vmap` over `functional_call`: measured on the project's AMD EPYC (one
thread), vmap's per-op cost made 8 members' CartPole policy pass 807 us against 8 x 130 us
one at a time; batched matrix products remove that cost instead of moving it.

Per member, as in separate runs: its minibatches (its own permutation of its own real
transitions; rollouts with different numbers of real transitions are padded with weight 0),
its gradient clipping (its own norm, never a global one), its learning rate and Adam's step
count, and its KL stop (a member past its limit takes no more steps in that update). Because
a member's parameters are views, its agent checkpoints, evaluates and acts as a plain agent:
nothing downstream knows it trained in a population.

Populations of settings (`lab sweep SPEC --vectorize`): members may also differ in float
settings (learning rate, entropy and value weights, clip range, gamma, ...). The loss is
still the algorithm's own, written for one member's floats: it runs on a view of the first
member whose differing floats are `PerMember` tensors, one value per member, which line up
with the members' dimension of whatever they meet. Settings that shape the population
(widths, rollout length, minibatch size, epochs, switches) must agree.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

import torch
from torch import nn

from lab.api import LabError
from lab.buffers.rollout import RolloutBatch, rollout_bytes
from lab.device import torch_threads
from lab.rl.onpolicy import OnPolicyAgent
from lab.rl.policies import ActorCritic, PolicyStep


def check_stackable(algo_cls: type) -> None:
    """One line naming why `algo_cls` cannot train as a population, if it cannot."""
    family = getattr(algo_cls, "population", None)
    if isinstance(algo_cls, type) and family is not None:
        family.check_class(algo_cls)
        return
    if not (isinstance(algo_cls, type) and issubclass(algo_cls, OnPolicyAgent)):
        raise LabError(f"--vectorize trains on-policy agents (reinforce, a2c, ppo and their subclasses) and the DQN "
                       f"family as one population; {getattr(algo_cls, 'name', algo_cls)} is not one of them: drop "
                       "--vectorize to run its seeds as separate processes")
    if "update" in _own_attributes(algo_cls):
        raise LabError(f"{algo_cls.name} writes its own update(), which --vectorize cannot map over members: write "
                       "the update as loss() and update_plan() (docs/plugins.md), or drop --vectorize")


def _own_attributes(cls: type) -> set[str]:
    """Names defined by `cls` or a base below OnPolicyAgent."""
    names: set[str] = set()
    for klass in cls.__mro__:
        if klass is OnPolicyAgent:
            break
        names.update(vars(klass))
    return names


def member_bytes(agent: OnPolicyAgent) -> int:
    """What one member adds to a population's memory besides its envs: its rollout twice (its
    own buffer and its rows of the stacked minibatch source) and its weights four times
    (parameters, gradients and two optimizer moments)."""
    buffer = agent.buffer
    rollout = rollout_bytes(buffer.num_steps, buffer.num_envs, buffer.observation_shape, buffer.action_shape,
                            buffer.observations.dtype, buffer.actions.dtype)
    weights = sum(p.numel() * p.element_size() for p in agent.policy.parameters())
    return 2 * rollout + 4 * weights


class PerMember(torch.Tensor):
    """A setting with one value per member ([members]). In an operation with tensors that
    carry the members first ([members, ...]) it lines up with that dimension, so a loss written
    for one member's floats (`c.ent_coef * entropy`, `ratio.clamp(1 - clip, 1 + clip)`)
    computes every member's own; among themselves PerMembers stay PerMember."""

    @classmethod
    def __torch_function__(cls, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        with torch._C.DisableTorchFunctionSubclass():
            plain = [t for t in _tensors((args, kwargs)) if not isinstance(t, PerMember)]
            ndim = max([1, *(t.dim() for t in plain)])

            def aligned(x: Any) -> Any:
                if isinstance(x, PerMember):
                    return x.as_subclass(torch.Tensor).view(-1, *[1] * (ndim - 1))
                if isinstance(x, (list, tuple)):
                    return type(x)(aligned(item) for item in x)
                return x

            out = func(*aligned(args), **{key: aligned(value) for key, value in kwargs.items()})
            return out.as_subclass(PerMember) if not plain and isinstance(out, torch.Tensor) else out


def _tensors(value: Any) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (list, tuple)):
        return [t for item in value for t in _tensors(item)]
    if isinstance(value, dict):
        return [t for item in value.values() for t in _tensors(item)]
    return []


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _differing_floats(values: Sequence[dict[str, Any]], floats: Callable[[str], bool]) -> dict[str, list[float]]:
    """The numbers that differ between the dicts, among the entries `floats` names: name -> values."""
    return {name: [float(v[name]) for v in values] for name, first in values[0].items()
            if floats(name) and all(_number(v.get(name)) for v in values) and any(v[name] != first for v in values)}


def float_fields(config: Any) -> set[str]:
    """The fields of a config (class or instance) declared float (`float` or `float | None`):
    what the members of a population may differ in."""
    return {f.name for f in dataclasses.fields(config) if "float" in str(f.type)}


def check_settings(members: Sequence[Any], network: Callable[[Any], nn.Module] = lambda agent: agent.policy) -> None:
    """One line naming the first setting that members of one population may not differ in:
    anything but a float (their seeds are run settings, not the algorithm's)."""
    first = members[0]
    for member in members[1:]:
        if type(member) is not type(first):
            raise LabError(f"the members of a population must be one algorithm; got {first.name} and {member.name}")
        floats = float_fields(first.config)
        for field in dataclasses.fields(first.config):
            mine, theirs = getattr(first.config, field.name), getattr(member.config, field.name)
            if mine != theirs and not (field.name in floats and _number(mine) and _number(theirs)):
                raise LabError(f"the members of a population differ in {field.name} ({mine} and {theirs}), which "
                               "shapes how they train together; only float settings (learning_rate, ent_coef, "
                               "gamma, ...) may differ: run these without --vectorize")
        shapes = [tuple(p.shape) for p in network(first).parameters()], \
            [tuple(p.shape) for p in network(member).parameters()]
        if shapes[0] != shapes[1]:
            raise LabError("the members of a population need networks of one shape, but their envs' observations "
                           "or actions differ: train one env per population")


def settings_view(members: Sequence[OnPolicyAgent], device: torch.device) -> OnPolicyAgent:
    """The first member, or where the members' float settings differ (config fields and float
    attributes such as ppo's annealed clip range), a copy whose differing floats are
    `PerMember` tensors: its `loss` computes each member's own."""
    first = members[0]
    floats = float_fields(first.config)
    fields = _differing_floats([vars(m.config) for m in members], floats.__contains__)
    attributes = _differing_floats([vars(m) for m in members], lambda name: type(vars(first)[name]) is float)
    if not fields and not attributes:
        return first
    view = copy.copy(first)
    view.config = copy.copy(first.config)
    for name, values in fields.items():
        object.__setattr__(view.config, name, torch.tensor(values, device=device).as_subclass(PerMember))
    for name, values in attributes.items():
        object.__setattr__(view, name, torch.tensor(values, device=device).as_subclass(PerMember))
    return view


class Rule(Enum):
    """The elementwise update rules a population steps for all members at once."""

    ADAM = "adam"
    RMSPROP = "rmsprop"


@dataclass(frozen=True)
class OptimizerKind:
    """The elementwise update of one of torch's optimizers, with its settings."""

    rule: Rule
    settings: dict[str, Any]
    state_names: tuple[str, ...]

    @classmethod
    def of_members(cls, optimizers: Sequence[torch.optim.Optimizer], algo: str) -> OptimizerKind:
        """The members' one kind of optimizer; one line if their settings (but the learning
        rate, which is each member's own) differ."""
        kinds = [cls.of(optimizer, algo) for optimizer in optimizers]
        for kind in kinds[1:]:
            if kind != kinds[0]:
                raise LabError(f"the members' optimizers differ ({kinds[0].rule.value} {kinds[0].settings} and "
                               f"{kind.rule.value} {kind.settings}); a population steps them as one: give them one "
                               "epsilon and one set of betas, or drop --vectorize")
        return kinds[0]

    @classmethod
    def of(cls, optimizer: torch.optim.Optimizer, algo: str) -> OptimizerKind:
        group = optimizer.param_groups[0]
        plain = not group.get("weight_decay") and not group.get("maximize") and not group.get("amsgrad")
        if type(optimizer) is torch.optim.Adam and plain:
            return cls(Rule.ADAM, {"betas": group["betas"], "eps": group["eps"]}, ("exp_avg", "exp_avg_sq"))
        if type(optimizer) is torch.optim.RMSprop and plain and not group["momentum"] and not group["centered"]:
            return cls(Rule.RMSPROP, {"alpha": group["alpha"], "eps": group["eps"]}, ("square_avg",))
        raise LabError(f"--vectorize steps Adam and RMSprop (without weight decay, momentum or centering) for all "
                       f"members at once; {algo} uses {type(optimizer).__name__} with {_describe(group)}: drop "
                       "--vectorize for it")


def _describe(group: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in group.items() if k != "params")


class StackedOptimizer:
    """N of torch's Adam or RMSprop optimizers, one per member, over the members' parameters
    flattened into rows of one tensor ([members, parameters]): each member has its own
    learning rate and step count, and a member left out of a step (`active`) is not changed.
    Its gradients are first clipped to the member's own max norm by its own norm, as
    `clip_grad_norm_` does for one run."""

    def __init__(self, kind: OptimizerKind, flat: torch.Tensor, state: dict[str, torch.Tensor],
                 steps: torch.Tensor) -> None:
        self.kind, self.flat, self.state, self.steps = kind, flat, state, steps

    @torch.no_grad()
    def step(self, grad: torch.Tensor, active: torch.Tensor, lrs: torch.Tensor, max_norms: torch.Tensor) -> None:
        """One step with `grad` ([members, parameters]) for the `active` members at `lrs`, each
        member's gradient clipped to its `max_norms`."""
        norms = grad.square().sum(1, keepdim=True).sqrt()
        grad = grad * (max_norms.unsqueeze(1) / (norms + 1e-6)).clamp(max=1.0)
        self.steps += active.to(self.steps.dtype)
        lr, on = lrs.unsqueeze(1), active.unsqueeze(1)
        if self.kind.rule is Rule.ADAM:
            beta1, beta2 = self.kind.settings["betas"]
            steps = self.steps.unsqueeze(1)
            exp_avg = self.state["exp_avg"].lerp(grad, 1 - beta1)
            exp_avg_sq = self.state["exp_avg_sq"] * beta2 + (1 - beta2) * grad.square()
            denom = (exp_avg_sq.sqrt() / (1 - beta2 ** steps).sqrt()).add_(self.kind.settings["eps"])
            params = self.flat - lr / (1 - beta1 ** steps) * exp_avg / denom
            updates = {"exp_avg": exp_avg, "exp_avg_sq": exp_avg_sq}
        else:
            alpha = self.kind.settings["alpha"]
            square_avg = self.state["square_avg"] * alpha + (1 - alpha) * grad.square()
            params = self.flat - lr * grad / (square_avg.sqrt() + self.kind.settings["eps"])
            updates = {"square_avg": square_avg}
        everyone = bool(active.all())
        for name, new in updates.items():
            self.state[name].copy_(new if everyone else torch.where(on, new, self.state[name]))
        self.flat.copy_(params if everyone else torch.where(on, params, self.flat))


def stack_parameters(modules: Sequence[nn.Module], optimizers: Sequence[torch.optim.Optimizer],
                     kind: OptimizerKind | None) -> tuple[dict[str, torch.Tensor], StackedOptimizer | None]:
    """The members' `modules` (one architecture) stacked: every parameter as [members, *shape]
    (name -> tensor, views of one flat [members, parameters] tensor that requires grad), and
    each member's own parameters and, with `kind`, its optimizer's state made views of those
    rows, so its agent saves, loads and acts as ever. Returns (params, the members' optimizer
    over the rows, or None without `kind`: a target network)."""
    template = modules[0]
    names = [name for name, _ in template.named_parameters()]
    device = template.get_parameter(names[0]).device

    def rows(tensor_of: Callable[[int, str], torch.Tensor]) -> torch.Tensor:
        return torch.stack([torch.cat([tensor_of(k, name).detach().reshape(-1).to(device) for name in names])
                            for k in range(len(modules))])

    def saved(key: str) -> Callable[[int, str], torch.Tensor]:
        def of(k: int, name: str) -> torch.Tensor:
            param = modules[k].get_parameter(name)
            return optimizers[k].state.get(param, {}).get(key, torch.zeros_like(param))
        return of

    flat = rows(lambda k, name: modules[k].get_parameter(name))
    state = {key: rows(saved(key)) for key in kind.state_names} if kind is not None else {}
    steps = torch.tensor([float(optimizers[k].state.get(modules[k].get_parameter(names[0]), {}).get("step", 0.0))
                          for k in range(len(modules))], device=device) if kind is not None else None
    params: dict[str, torch.Tensor] = {}
    offset = 0
    for name in names:
        shape = template.get_parameter(name).shape
        part = slice(offset, offset + shape.numel())
        params[name] = flat[:, part].view(len(modules), *shape).requires_grad_()
        for k, module in enumerate(modules):  # each member's tensors are now views of the rows
            param = module.get_parameter(name)
            param.data = flat[k, part].view(shape)
            if steps is not None:
                optimizers[k].state[param] = {"step": steps[k],
                                              **{key: state[key][k, part].view(shape) for key in state}}
        offset += shape.numel()
    return params, StackedOptimizer(kind, flat, state, steps) if kind is not None and steps is not None else None


class StackedLayers:
    """Modules of one architecture applied for every member at once: tensors carry the
    members first ([members, batch, ...]), parameters are `params` (name: [members, *shape])."""

    def __init__(self, params: dict[str, torch.Tensor]) -> None:
        self.params = params
        self.members = next(iter(params.values())).shape[0]

    def frames(self, obs: torch.Tensor) -> torch.Tensor:
        """uint8 frames [members, batch, C, H, W] scaled to [0, 1], laid out for `apply`'s
        convolutions: as they are on a CPU (a convolution per member), else [batch, members x
        C, H, W] (members as the groups of one convolution)."""
        frames = obs.float().div_(255.0)
        if frames.device.type != "cpu":
            frames = frames.transpose(0, 1).reshape(obs.shape[1], -1, *obs.shape[3:])
        return frames

    def linear(self, name: str, x: torch.Tensor) -> torch.Tensor:
        weight, bias = self.params[f"{name}.weight"], self.params[f"{name}.bias"]
        out_features, in_features = weight.shape[1:]
        if weight.requires_grad and torch.is_grad_enabled() \
                and in_features * out_features > x.shape[1] * (in_features + out_features):
            # a wide layer on a small batch (the Nature CNN's 3136 x 512 at batch 32): (W x^T)^T, so
            # the weights' gradient comes out in their own layout rather than transposed and copied
            return torch.baddbmm(bias.unsqueeze(2), weight, x.transpose(1, 2)).transpose(1, 2)
        return torch.baddbmm(bias.unsqueeze(1), x, weight.transpose(1, 2))

    def apply(self, module: nn.Module, path: str, x: torch.Tensor) -> torch.Tensor:
        """`module` (named `path` in the template) on `x`, for every member."""
        if isinstance(module, nn.Sequential):
            for child_name, layer in module.named_children():
                x = self.apply(layer, f"{path}.{child_name}", x)
        elif isinstance(module, nn.Linear):
            x = self.linear(path, x)
        elif isinstance(module, nn.Conv2d):
            weight, bias = self.params[f"{path}.weight"], self.params[f"{path}.bias"]
            if x.dim() == 5:  # oneDNN's grouped convolutions cost more than one per member (bench/population_step.py)
                x = torch.stack([nn.functional.conv2d(x[k], weight[k], bias[k], module.stride, module.padding,
                                                      module.dilation) for k in range(self.members)])
            else:  # members as groups: one kernel for all
                x = nn.functional.conv2d(x, weight.flatten(0, 1), bias.flatten(), module.stride, module.padding,
                                         module.dilation, groups=weight.shape[0])
        elif isinstance(module, nn.Flatten):  # after the convolutions: back to [members, batch, features]
            x = x.flatten(2) if x.dim() == 5 else x.reshape(x.shape[0], self.members, -1).transpose(0, 1)
        elif isinstance(module, (nn.Tanh, nn.ReLU, nn.Identity)):
            x = module(x)
        else:
            raise LabError(f"--vectorize stacks Linear, Conv2d, Tanh and ReLU layers; this network has "
                           f"{type(module).__name__} at {path}: drop --vectorize")
        return x


class StackedPolicy(StackedLayers):
    """The members' `ActorCritic`s as one: the same methods on tensors with the members first
    (observations [members, batch, ...] in, outputs [members, batch, ...] out), its parameters
    `params` (name: [members, *shape], views of one flat tensor). `log_prob`, `entropy`,
    `from_noise` and `mode` are ActorCritic's own code, which broadcasts over the members."""

    def __init__(self, template: ActorCritic, params: dict[str, torch.Tensor]) -> None:
        super().__init__(params)
        self.template = template
        self.continuous, self.images = template.continuous, template.images
        for name, _ in template.named_buffers():  # the action box: the same for every member
            setattr(self, name, getattr(template, name))

    @property
    def log_std(self) -> torch.Tensor:  # [members, 1, actions]: broadcasts over a batch
        return self.params["log_std"].unsqueeze(1)

    log_prob = ActorCritic.log_prob
    entropy = ActorCritic.entropy
    from_noise = ActorCritic.from_noise
    mode = ActorCritic.mode
    to_env = ActorCritic.to_env

    def __call__(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(policy outputs, values) for every member, as `ActorCritic.forward` for each."""
        policy = self.template
        if self.images:
            features = self.apply(policy.trunk, "trunk", self.frames(obs))
        else:
            features = obs.float().flatten(2)
        actor = self.apply(policy.actor_body, "actor_body", features)
        critic = self.apply(policy.critic_body, "critic_body", features)
        out = self.linear("policy_head", actor)
        value = self.linear("value_head", critic).squeeze(-1)
        return (out, value) if self.continuous else (torch.log_softmax(out, -1), value)


class Population:
    """The members' agents, stacked; `train_step` is one training step of every member."""

    def __init__(self, members: Sequence[OnPolicyAgent], update_threads: int = 1) -> None:
        """`update_threads`: CPU threads for the update, whose batched products over all the
        members are large enough to share; everything else (acting, evaluating) stays on the
        members' own setting, one thread for an MLP."""
        first = members[0]
        self.update_threads = update_threads
        check_settings(members)
        self.kind = OptimizerKind.of_members([m.optimizer for m in members], first.name)
        self.members = list(members)
        self.restack()

    @staticmethod
    def check_member(agent: OnPolicyAgent) -> None:
        """Every on-policy run stacks once its class does."""

    member_bytes = staticmethod(member_bytes)

    def restack(self, keep: Sequence[int] | None = None) -> None:
        """Stack the members' parameters and optimizer states (only those at `keep`: a member
        left, having diverged) into flat rows, and make every member's tensors views of them."""
        if keep is not None:
            self.members = [self.members[i] for i in keep]
        policies = [member.policy for member in self.members]
        self.params, self.optimizer = stack_parameters(policies, [m.optimizer for m in self.members], self.kind)
        self.policy = StackedPolicy(policies[0], self.params)

    # ------------------------------------------------------------ the rollout

    def collect_rollouts(self) -> None:
        """`n_steps` vector steps of every member's envs, the members' policies in one pass;
        each member's actions drawn from its own stream, as its own run draws them."""
        members, policy = self.members, self.policy
        for member in members:
            member.buffer.reset()
            member.valid_counts = None
        with torch.no_grad():
            for _ in range(members[0].config.n_steps):
                members[0].ctx.check_stop()  # (one stop request for the process)
                out, values = policy(torch.stack([m.obs for m in members]))
                noise = torch.stack([m.policy.noise(out.shape[1:], m.action_generator, out.device) for m in members])
                actions = policy.from_noise(out, noise)
                log_probs = policy.log_prob(out, actions)
                for k, member in enumerate(members):
                    member.env_step(PolicyStep(actions[k], log_probs[k], values[k]))
            _, last_values = policy(torch.stack([m.obs for m in members]))
            for k, member in enumerate(members):
                member.end_rollout(last_values[k])

    # ------------------------------------------------------------- the update

    def update(self, lrs: torch.Tensor) -> list[dict[str, float]]:
        """Every member's update as its own agent's `update()` takes it; each member's metrics."""
        members, count = self.members, len(self.members)
        plans = [m.update_plan() for m in members]  # each member's own schedules (ppo's clip range)
        plan, device = plans[0], self.optimizer.flat.device
        if any((p.epochs, p.batch_size, p.kl_limit is None) != (plan.epochs, plan.batch_size, plan.kl_limit is None)
               for p in plans):
            raise LabError(f"the members' update plans differ ({plans[0]} and others): a population walks its "
                           "members' rollouts together, with one number of epochs and one minibatch size")
        loss_of = settings_view(members, device).loss
        kl_limits = None if plan.kl_limit is None else torch.tensor([p.kl_limit for p in plans], device=device)
        fields = [torch.stack([getattr(m.buffer, name)[: m.buffer.step].flatten(0, 1) for m in members])
                  for name in ("observations", "actions", "log_probs", "values", "advantages", "returns")]
        real = [m.buffer.valid[: m.buffer.step].reshape(-1).nonzero().squeeze(1) for m in members]
        rows = torch.arange(count, device=device).unsqueeze(1)
        stopped = torch.zeros(count, dtype=torch.bool, device=device)
        taken = torch.zeros(count, device=device)
        sums: dict[str, torch.Tensor] = {}
        max_norms = torch.tensor([m.config.max_grad_norm for m in members], device=device)
        leaves = list(self.params.values())
        for _ in range(plan.epochs):
            if plan.batch_size:
                orders = [idx[torch.randperm(idx.numel(), generator=m.minibatch_generator,
                                             device=m.minibatch_generator.device).to(idx.device)]
                          for idx, m in zip(real, members, strict=True)]
            else:  # the whole rollout, one step a pass
                orders = real
            size = plan.batch_size or max(1, max(o.numel() for o in orders))
            for start in range(0, max(o.numel() for o in orders), size):
                members[0].ctx.check_stop()
                chunks = [o[start : start + size] for o in orders]
                lengths = torch.tensor([c.numel() for c in chunks], device=device)
                active = ~stopped & (lengths > 0)
                losses, stats = loss_of(self.policy, self._batch(fields, rows, chunks, lengths))
                if kl_limits is not None:  # past its limit, a member takes no more steps this update
                    over = active & (stats["approx_kl"].detach() > kl_limits)
                    stopped |= over
                    active &= ~over
                if not bool(active.any()):
                    if bool(stopped.all()):
                        break
                    continue
                grads = torch.autograd.grad(losses.sum(), leaves)
                self.optimizer.step(torch.cat([g.reshape(count, -1) for g in grads], 1), active, lrs, max_norms)
                weight = active.float()
                taken += weight
                for key, value in stats.items():
                    value = value.detach().float() * weight
                    sums[key] = sums[key] + value if key in sums else value
            if bool(stopped.all()):
                break
        results = []
        for k, member in enumerate(members):
            metrics = {f"train/{key}": float(total[k] / taken[k]) for key, total in sums.items()} if taken[k] else {}
            results.append({**metrics, **member.plan_metrics()})
        return results

    @staticmethod
    def _batch(fields: list[torch.Tensor], rows: torch.Tensor, chunks: list[torch.Tensor],
               lengths: torch.Tensor) -> RolloutBatch:
        """The members' minibatches as one [members, size, ...] batch; padded with weight 0
        where their sizes differ (a member with none gets one placeholder, and no step)."""
        size = int(lengths.max())
        if bool((lengths == size).all()):
            index = torch.stack(chunks)
            return RolloutBatch(*(f[rows, index] for f in fields))
        index = torch.zeros((len(chunks), size), dtype=torch.long, device=rows.device)
        for k, chunk in enumerate(chunks):
            index[k, : chunk.numel()] = chunk
        weights = (torch.arange(size, device=rows.device) < lengths.unsqueeze(1)).float()
        weights[:, 0] = torch.where(lengths == 0, 1.0, weights[:, 0])
        return RolloutBatch(*(f[rows, index] for f in fields), weights=weights)

    def train_step(self) -> list[dict[str, float]]:
        """One rollout and one update of every member; each member's metrics, as its agent's
        `train_step` returns them (its `global_step` advanced)."""
        self.collect_rollouts()
        lrs = [member.learning_rate() for member in self.members]
        for member, lr in zip(self.members, lrs, strict=True):
            for group in member.optimizer.param_groups:  # (what its checkpoint records)
                group["lr"] = lr
        with torch_threads(self.update_threads):
            metrics = self.update(torch.tensor(lrs, dtype=torch.float32, device=self.optimizer.flat.device))
        return [member.updated(m, lr) for member, m, lr in zip(self.members, metrics, lrs, strict=True)]


def population_type(algo_cls: type) -> Any:
    """The class that trains `algo_cls`'s runs as a population: the family's own (`population`
    on the agent class: the DQN family's `QPopulation`), else the on-policy `Population`."""
    return getattr(algo_cls, "population", None) or Population

