"""`ppo-diverging`: ppo whose seed-2 run turns its value head to NaN after its first update, so
a test can watch one member of a population diverge while the others go on."""

import torch

from lab.api import hookimpl
from plugins.ppo import PPO


class DivergingPPO(PPO):
    name = "ppo-diverging"

    def update_plan(self):
        if self.ctx.seed == 2 and self.global_step > 0:
            with torch.no_grad():
                self.policy.value_head.bias.fill_(float("nan"))
        return super().update_plan()


@hookimpl
def register_algorithms(register) -> None:
    register(DivergingPPO)
