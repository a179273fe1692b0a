"""Supervised baselines: `logreg`, `mlp` and `cnn` image classifiers.

One training class (`Classifier`) does everything: data from the shared `DataBuffer`
(the whole dataset as uint8 on the device, augmentation on the device: its random crops
and flips, and `--rotation`'s random rotations from `lab.augment`), one optimizer
step per `train_step`, a warmup + linear-decay learning rate over the run's step budget,
in-order evaluation, and media (confusion matrix, misclassified examples on the test
split). The three algorithms differ only in their config defaults and model builder.

`validation_size` training images (a fixed random choice, the same for every run) are held
out as a validation split: `best.pt` is chosen on its accuracy (`val/accuracy`), so the
test accuracy (`eval/accuracy`, the number to report) never takes part in model selection.

The models are `lab.classifiers.ImageClassifier`s: `lab.load(run).model` is one, which is
how a generator's `--classifier RUN_DIR` measures its samples in this classifier's features
(`lab.generative.reference`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

from lab import distributed
from lab.api import Algorithm, Context, ImageDataset, LabError, check_ranges, hookimpl, option, split_validation
from lab.augment import random_rotation
from lab.buffers.data import DataBuffer
from lab.classifiers import (
    ImageClassifier,
    channel_stats,
    classification_loss,
    cnn_body,
    logreg_body,
    mlp_body,
    sgd_or_adamw,
    training_step,
)
from lab.plugins.supervised.media import confusion_matrix, plot_confusion_matrix, plot_misclassified
from lab.schedules import warmup_decay

MISCLASSIFIED_SHOWN = 32


@dataclass
class TrainConfig:
    """Settings every classifier shares (the subclasses change defaults and add model size)."""

    batch_size: int = option(256, "training minibatch size")
    eval_batch_size: int = option(2000, "batch size for the in-order validation and test passes")
    validation_size: int = option(5000, "training images held out to choose best.pt (the test split is only reported)")
    optimizer: Literal["sgd", "adamw"] = option("sgd", "sgd (Nesterov momentum) or adamw")
    learning_rate: float = option(0.1, "peak learning rate")
    momentum: float = option(0.9, "SGD momentum / AdamW beta1")
    weight_decay: float = option(5e-4, "L2 weight decay")
    warmup: float = option(0.05, "fraction of the run spent warming the LR up, then linear decay")
    label_smoothing: float = option(0.0, "cross-entropy label smoothing")
    augment: bool = option(False, "random crops (and flips if --flip) on the device")
    crop_padding: int = option(2, "pixels of padding for the random crops")
    flip: bool = option(False, "random horizontal flips (not for digits)")
    rotation: float = option(0.0, "random rotations within +-DEGREES, after the crops (0: none)")
    image_size: int | None = option(None, "resize images to this square size (default: as stored)")

    def __post_init__(self) -> None:
        check_ranges(self, positive=("batch_size", "eval_batch_size", "learning_rate"),
                     below_one=("label_smoothing",))
        if self.validation_size < 1:
            raise ValueError(f"--validation-size must be at least 1, got {self.validation_size}")
        if not 0 <= self.warmup < 1:
            raise ValueError(f"--warmup is a fraction of the run in [0, 1), got {self.warmup}")
        if not 0 <= self.rotation <= 180:
            raise ValueError(f"--rotation takes degrees in [0, 180], got {self.rotation}")


@dataclass
class LogRegConfig(TrainConfig):
    weight_decay: float = option(0.0, "L2 weight decay")
    learning_rate: float = option(0.05, "peak learning rate")


@dataclass
class MLPConfig(TrainConfig):
    hidden: tuple[int, ...] = option((512, 512), "hidden layer sizes, e.g. 512,512")
    dropout: float = option(0.2, "dropout after each hidden layer")
    learning_rate: float = option(0.05, "peak learning rate")

    def __post_init__(self) -> None:
        super().__post_init__()
        check_ranges(self, at_least_one=("hidden",))


@dataclass
class CNNConfig(TrainConfig):
    widths: tuple[int, ...] = option((32, 64, 128), "channels of each conv block (each halves H, W)")
    convs_per_block: int = option(1, "3x3 convolutions per block")
    # batches of 128: twice the updates per epoch for the same compute (99.3% after 3 epochs
    # on MNIST against 99.0% with 256 at lr 0.2)
    batch_size: int = option(128, "training minibatch size")
    learning_rate: float = option(0.1, "peak learning rate")
    label_smoothing: float = option(0.1, "cross-entropy label smoothing")
    augment: bool = option(True, "random crops (and flips if --flip) on the device")

    def __post_init__(self) -> None:
        super().__post_init__()
        check_ranges(self, at_least_one=("widths", "convs_per_block"))


def labelled(data: object, algo: str) -> ImageDataset:
    if not isinstance(data, ImageDataset) or data.train_labels is None or data.test_labels is None:
        raise LabError(f"{algo} needs a labelled dataset (e.g. mnist, or image-folder with class sub-folders)")
    return data


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """SGD with Nesterov momentum (or AdamW); no weight decay on biases and norms."""
    return sgd_or_adamw(model, cfg.optimizer, cfg.learning_rate, cfg.momentum, cfg.weight_decay)


class Classifier(Algorithm):
    """Train an image classifier with cross-entropy; subclasses provide `build_body`.

    Under torchrun (docs/scale.md: Several processes) `batch_size` is the global batch: each rank
    trains on its 1/world_size of every batch through DistributedDataParallel, so a step of
    N processes is a step of one process on the same batch (up to BatchNorm's per-process
    statistics and augmentation draws), and an epoch has the same number of steps.
    """

    kind = "supervised"
    key_metric = "val/accuracy"  # chosen on validation: the test split stays unseen
    Config: ClassVar[type] = TrainConfig
    data_parallel: ClassVar[bool] = True

    @classmethod
    def build_body(cls, config: Any, shape: tuple[int, int, int]) -> tuple[nn.Module, int]:
        raise NotImplementedError

    @classmethod
    def build_model(cls, config: Any, shape: tuple[int, int, int], classes: list[str], mean: list[float],
                    std: list[float]) -> ImageClassifier:
        body, features = cls.build_body(config, shape)
        return ImageClassifier(body, features, classes, mean, std, shape)

    def __init__(self, config: TrainConfig, ctx: Context) -> None:
        super().__init__(config, ctx)
        options = {} if config.image_size is None else {"image_size": config.image_size}
        data = labelled(ctx.load_dataset(**options), self.name)
        self.classes = data.classes or [str(i) for i in range(int(data.train_labels.max()) + 1)]
        self.input_shape = data.image_shape
        if config.validation_size >= len(data.train_images):
            raise LabError(
                f"--validation-size {config.validation_size} must be smaller than the "
                f"{len(data.train_images)} training images of {data.name}"
            )
        train_rows, val_rows = split_validation(len(data.train_images), config.validation_size)
        train_images, train_labels = data.train_images[train_rows], data.train_labels[train_rows]
        mean, std = channel_stats(train_images)
        self.model = self.build_model(config, data.image_shape, self.classes, mean, std).to(ctx.device)
        if any(isinstance(layer, nn.Conv2d) for layer in self.model.modules()):
            # NHWC convolutions: oneDNN runs this CNN's step 1.5x faster on the project's CPU
            self.model.to(memory_format=torch.channels_last)
        batch_size = distributed.split(config.batch_size, "--batch-size") if ctx.world_size > 1 else config.batch_size
        self.train_data = DataBuffer(
            train_images, train_labels, ctx.device, batch_size, seed=ctx.seed,
            drop_last=True, crop_padding=config.crop_padding if config.augment else 0,
            flip=config.augment and config.flip, normalize=None, rank=ctx.rank, world_size=ctx.world_size,
        )
        self.val_data = DataBuffer(
            data.train_images[val_rows], data.train_labels[val_rows], ctx.device, config.eval_batch_size,
            shuffle=False, normalize=None, rank=ctx.rank, world_size=ctx.world_size,
        )
        self.test_data = DataBuffer(
            data.test_images, data.test_labels, ctx.device, config.eval_batch_size, shuffle=False,
            normalize=None, rank=ctx.rank, world_size=ctx.world_size,
        )
        self.optimizer = make_optimizer(self.model, config)
        # a named stream: saved with checkpoints, so a resumed run rotates as the straight one
        self.rotation_generator = ctx.generator("augment") if config.rotation else None
        self.trainer: nn.Module | None = None  # the model to train: DDP around it under torchrun
        # with NHWC weights, compiling gains nothing measurable on the project's CPU
        self.loss = ctx.compile(classification_loss, name=f"{self.name} loss", calls=lambda: self.ctx.total_steps)

    def training_model(self) -> nn.Module:
        """`self.model`, wrapped in DistributedDataParallel under torchrun (made at the first
        step: wrapping is a collective, which set-up must not contain). Checkpoints, evaluation
        and `lab.load` use the unwrapped model."""
        if self.trainer is None:
            if self.ctx.world_size == 1:
                self.trainer = self.model
            else:
                device_ids = [self.ctx.device.index] if self.ctx.device.type == "cuda" else None
                self.trainer = nn.parallel.DistributedDataParallel(self.model, device_ids=device_ids)
        return self.trainer

    @property
    def steps_per_epoch(self) -> int:
        return len(self.train_data)

    def train_step(self) -> dict[str, float]:
        # the horizon is the budget the run was created with: a resumed or extended run
        # continues the same schedule (at 0 past the end) instead of restarting its warm-up
        lr = warmup_decay(self.config.learning_rate, self.ctx.total_steps, self.config.warmup)(self.global_step)
        batch = self.train_data.next()
        if self.rotation_generator is not None:
            images = random_rotation(batch.images.float().div_(255), self.config.rotation, self.rotation_generator)
            batch = batch._replace(images=images)
        loss = training_step(self.training_model(), self.optimizer, batch, lr, self.config.label_smoothing, self.loss)
        self.global_step += 1
        return {"train/loss": loss.item(), "train/lr": lr}

    @torch.inference_mode()
    def predict(self, split: DataBuffer) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(summed loss, predictions, targets) over this rank's share of `split`, in order."""
        self.model.eval()
        total = torch.zeros((), device=self.ctx.device)
        predictions, targets = [], []
        for batch in split.ordered():
            self.ctx.check_stop()  # a whole split: a stop ends the evaluation within seconds
            logits = self.model(batch.images)
            total += F.cross_entropy(logits, batch.labels, reduction="sum")
            predictions.append(logits.argmax(1))
            targets.append(batch.labels)
        return total, torch.cat(predictions), torch.cat(targets)

    def totals(self, split: DataBuffer) -> torch.Tensor:
        """(summed loss, correct, count) on this rank: sums, so ranks combine with one all_reduce."""
        loss, predictions, targets = self.predict(split)
        correct = (predictions == targets).sum().float()
        return torch.stack([loss, correct, torch.tensor(float(len(targets)), device=loss.device)])

    def evaluate(self) -> dict[str, float]:
        """`val/*` on the held-out training images (what best.pt is chosen on), `eval/*` on the test split.

        Under torchrun each rank evaluates its share of both splits with rank 0's BatchNorm
        statistics (the ones checkpoints keep) and the sums are added up."""
        if self.ctx.world_size > 1:
            distributed.broadcast_module(self.model)
        stats = torch.stack([self.totals(self.val_data), self.totals(self.test_data)])
        if self.ctx.world_size > 1:
            stats = distributed.all_reduce_sum(stats)
        (val_loss, val_correct, val_count), (loss, correct, count) = stats.tolist()
        return {
            "val/loss": val_loss / val_count, "val/accuracy": val_correct / val_count,
            "eval/loss": loss / count, "eval/accuracy": correct / count,
        }

    def write_media(self, media_dir: Path) -> dict[str, Path]:
        test = self.test_data.unsharded()  # under torchrun only rank 0 writes media: the whole split
        _, predictions, targets = self.predict(test)
        step = f"step{self.global_step:09d}"
        matrix = confusion_matrix(targets, predictions, len(self.classes))
        wrong = (predictions != targets).nonzero().flatten()[:MISCLASSIFIED_SHOWN]
        images = test.images[wrong.to(test.images.device)]
        return {
            "eval/confusion_matrix": plot_confusion_matrix(
                matrix, self.classes, self.ctx.media_path(f"confusion_matrix-{step}", ".png")),
            "eval/misclassified": plot_misclassified(
                images, targets[wrong], predictions[wrong], self.classes, self.ctx.media_path(f"misclassified-{step}", ".png")
            ),
        }

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "data": self.train_data.state_dict(),
            "classes": list(self.classes),
            "input_shape": list(self.input_shape),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.train_data.load_state_dict(state["data"])


class LogReg(Classifier):
    """Multinomial logistic regression on the pixels (~92% on MNIST)."""

    name = "logreg"
    Config = LogRegConfig
    default_epochs = 5

    @classmethod
    def build_body(cls, config: LogRegConfig, shape: tuple[int, int, int]) -> tuple[nn.Module, int]:
        return logreg_body(shape)


class MLP(Classifier):
    """Fully connected ReLU network with dropout (>= 98% on MNIST)."""

    name = "mlp"
    Config = MLPConfig
    default_epochs = 10

    @classmethod
    def build_body(cls, config: MLPConfig, shape: tuple[int, int, int]) -> tuple[nn.Module, int]:
        return mlp_body(shape, config.hidden, config.dropout)


class CNN(Classifier):
    """Small fast convnet (conv-BN-ReLU-pool blocks), on-device crop augmentation (>= 99.5% on MNIST)."""

    name = "cnn"
    Config = CNNConfig
    default_epochs = 10

    @classmethod
    def build_body(cls, config: CNNConfig, shape: tuple[int, int, int]) -> tuple[nn.Module, int]:
        return cnn_body(shape, config.widths, config.convs_per_block)


ALGORITHMS: dict[str, type[Classifier]] = {cls.name: cls for cls in (LogReg, MLP, CNN)}


@hookimpl
def register_algorithms(register) -> None:
    for cls in ALGORITHMS.values():
        register(cls)

