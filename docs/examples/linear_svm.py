"""`svm`: a linear support-vector machine on the pixels, trained by SGD on the hinge loss.

A complete supervised plugin: the data from `ctx.load_dataset()`, batches from the shared
`DataBuffer`, `steps_per_epoch` so that `--epochs` works, and a held-out validation split
that `key_metric` names, so the run keeps the best checkpoint as `best.pt`.

    lab train svm --data squares --epochs 3 --plugins-dir docs/examples
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from lab.api import Algorithm, LabError, check_ranges, hookimpl, option, split_validation
from lab.buffers import DataBuffer
from lab.schedules import linear


@dataclass
class SVMConfig:
    batch_size: int = option(128, "training minibatch size")
    learning_rate: float = option(0.1, "SGD learning rate, decayed linearly to 0 over the run")
    weight_decay: float = option(1e-4, "L2 penalty on the weights (the margin term)")
    validation_size: int = option(500, "training images held out to choose best.pt")

    def __post_init__(self) -> None:
        check_ranges(self, positive=("batch_size", "learning_rate", "validation_size"),
                     non_negative=("weight_decay",))


class LinearSVM(Algorithm):
    """Linear SVM on the pixels (multi-class hinge loss, SGD)."""

    name = "svm"
    kind = "supervised"  # needs --data
    Config = SVMConfig
    key_metric = "val/accuracy"  # best.pt: the checkpoint with the best validation accuracy
    default_epochs = 5  # the budget when neither --steps nor --epochs is given

    def __init__(self, config: SVMConfig, ctx) -> None:
        super().__init__(config, ctx)
        data = ctx.load_dataset()  # lab.api.ImageDataset: uint8 (N, C, H, W) CPU tensors
        if data.train_labels is None or data.test_labels is None:
            raise LabError(f"svm needs labelled images; {data.name} has no labels")
        if config.validation_size >= len(data.train_images):
            raise LabError(f"--validation-size {config.validation_size} must be below the "
                           f"{len(data.train_images)} training images of {data.name}")
        train, val = split_validation(len(data.train_images), config.validation_size)
        # each buffer holds its split on ctx.device; batches come as float32 in [0, 1]
        self.train_data = DataBuffer(data.train_images[train], data.train_labels[train], ctx.device,
                                     config.batch_size, seed=ctx.seed, drop_last=True)
        self.val_data = DataBuffer(data.train_images[val], data.train_labels[val], ctx.device, 1000,
                                   shuffle=False)
        self.test_data = DataBuffer(data.test_images, data.test_labels, ctx.device, 1000, shuffle=False)
        classes = len(data.classes) or int(data.train_labels.max()) + 1
        self.model = torch.nn.Linear(math.prod(data.image_shape), classes).to(ctx.device)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=config.learning_rate,
                                         weight_decay=config.weight_decay)

    @property
    def steps_per_epoch(self) -> int:
        return len(self.train_data)  # batches in one epoch: --epochs N trains N times this many steps

    def scores(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images.flatten(1))

    def train_step(self) -> dict[str, float]:
        batch = self.train_data.next()  # .images (B, C, H, W), .labels (B,), on ctx.device
        loss = F.multi_margin_loss(self.scores(batch.images), batch.labels)
        # the schedule reads the run's horizon each time: a resumed run continues it
        lr = linear(self.config.learning_rate, 0.0, self.ctx.total_steps)(self.global_step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.global_step += 1
        return {"train/loss": loss.item(), "train/lr": lr}

    @torch.no_grad()
    def accuracy(self, split: DataBuffer) -> float:
        right = sum(int((self.scores(b.images).argmax(1) == b.labels).sum()) for b in split.ordered())
        return right / split.num_samples

    def evaluate(self) -> dict[str, float]:
        # val/ chooses best.pt; eval/ (the test split) is only reported
        return {"val/accuracy": self.accuracy(self.val_data), "eval/accuracy": self.accuracy(self.test_data)}

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "data": self.train_data.state_dict()}  # where in which epoch: resume takes the next batch

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.train_data.load_state_dict(state["data"])


@hookimpl
def register_algorithms(register) -> None:
    register(LinearSVM)
