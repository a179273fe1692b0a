"""Supervised baselines: `logreg`, `mlp` and `cnn` image classifiers.

One training class (`Classifier`) does everything: data from the shared `DataBuffer`
(the whole dataset as uint8 on the device, augmentation on the device), one optimizer
step per `train_step`, a warmup + linear-decay learning rate over the run's step budget,
in-order evaluation, and media (confusion matrix, misclassified examples on the test
split). The three algorithms differ only in their config defaults and model builder.

`validation_size` training images (a fixed random choice, the same for every run) are held
out as a validation split: `best.pt` is chosen on its accuracy (`val/accuracy`), so the
test accuracy (`eval/accuracy`, the number to report) never takes part in model selection.

`load_feature_extractor(run_dir)` rebuilds a trained classifier from its run directory
so other plugins (the generators' Frechet distance, CycleGAN's class preservation) can
use its penultimate features and logits.
"""

from __future__ import annotations

import hashlib
import sys
import typing
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Callable
from typing import Any, ClassVar, Literal

import torch
import yaml
import torch.nn as nn
import torch.nn.functional as F

from lab import distributed
from lab.algorithm import Algorithm
from lab.buffers.data import DataBuffer
from lab.run.checkpoint import load_checkpoint, save_checkpoint
from lab.config import check_ranges, convert, option
from lab.run.context import Context
from lab.datasets import ImageDataset, split_validation
from lab.errors import LabError
from lab.hookspecs import hookimpl
from lab.schedules import warmup_decay
from lab import networks as models
from lab.plugins.supervised.media import confusion_matrix, plot_confusion_matrix, plot_misclassified

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
    image_size: int | None = option(None, "resize images to this square size (default: as stored)")

    def __post_init__(self) -> None:
        check_ranges(self, positive=("batch_size", "eval_batch_size", "learning_rate"),
                     below_one=("label_smoothing",))
        if self.validation_size < 1:
            raise ValueError(f"--validation-size must be at least 1, got {self.validation_size}")
        if not 0 <= self.warmup < 1:
            raise ValueError(f"--warmup is a fraction of the run in [0, 1), got {self.warmup}")


@dataclass
class LogRegConfig(TrainConfig):
    weight_decay: float = option(0.0, "L2 weight decay")
    learning_rate: float = option(0.05, "peak learning rate")


@dataclass
class MLPConfig(TrainConfig):
    hidden: tuple[int, ...] = option((512, 512), "hidden layer sizes, e.g. 512,512")
    dropout: float = option(0.2, "dropout after each hidden layer")
    learning_rate: float = option(0.05, "peak learning rate")


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


def labelled(data: object, algo: str) -> ImageDataset:
    if not isinstance(data, ImageDataset) or data.train_labels is None or data.test_labels is None:
        raise LabError(f"{algo} needs a labelled dataset (e.g. mnist, or image-folder with class sub-folders)")
    return data


def channel_stats(images: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 images, in [0, 1] units (std floored for constant data)."""
    sample = images[:: max(1, len(images) // 20000)].float().div_(255).transpose(0, 1).flatten(1)
    return sample.mean(1).tolist(), sample.std(1).clamp_min(1e-3).tolist()


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """SGD with Nesterov momentum (or AdamW); no weight decay on biases and norms."""
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.learning_rate, betas=(cfg.momentum, 0.999))
    return torch.optim.SGD(groups, lr=cfg.learning_rate, momentum=cfg.momentum, nesterov=cfg.momentum > 0)


def classification_loss(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, smoothing: float) -> torch.Tensor:
    return F.cross_entropy(model(images), labels, label_smoothing=smoothing)


def training_step(model: nn.Module, optimizer: torch.optim.Optimizer, batch: Any, lr: float, smoothing: float,
                  loss: Callable[..., torch.Tensor] = classification_loss) -> torch.Tensor:
    """One cross-entropy step at learning rate `lr`; returns the loss (not synchronised).
    `loss`: `classification_loss` itself or its compiled form (`ctx.compile`)."""
    for group in optimizer.param_groups:
        group["lr"] = lr
    model.train()
    value = loss(model, batch.images, batch.labels, smoothing)
    optimizer.zero_grad(set_to_none=True)
    value.backward()
    optimizer.step()
    return value


class Classifier(Algorithm):
    """Train an image classifier with cross-entropy; subclasses provide `build_body`.

    Under torchrun (README: Several processes) `batch_size` is the global batch: each rank
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
    def build_model(cls, config: Any, shape: tuple[int, int, int], classes: int, mean: list[float], std: list[float]) -> models.ImageClassifier:
        body, features = cls.build_body(config, shape)
        return models.ImageClassifier(body, features, classes, mean, std)

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
        self.model = self.build_model(config, data.image_shape, len(self.classes), mean, std).to(ctx.device)
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
        self.horizon: int | None = None  # fixed at the first step: ctx.total_steps is known by then
        self.trainer: nn.Module | None = None  # the model to train: DDP around it under torchrun
        # with NHWC weights, compiling gains nothing measurable on the project's CPU
        self.loss = ctx.compile(classification_loss, name=f"{self.name} loss", calls=lambda: self.horizon or 0)

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
        if self.horizon is None:
            self.horizon = self.ctx.total_steps or self.steps_per_epoch
        # the horizon is the budget the run was created with: a resumed or extended run
        # continues the same schedule (at 0 past the end) instead of restarting its warm-up
        lr = warmup_decay(self.config.learning_rate, self.horizon, self.config.warmup)(self.global_step)
        loss = training_step(self.training_model(), self.optimizer, self.train_data.next(), lr,
                             self.config.label_smoothing, self.loss)
        self.global_step += 1
        return {"train/loss": loss.item(), "train/lr": lr}

    @torch.inference_mode()
    def predict(self, split: DataBuffer) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(summed loss, predictions, targets) over this rank's share of `split`, in order."""
        self.model.eval()
        total = torch.zeros((), device=self.ctx.device)
        predictions, targets = [], []
        for batch in split.ordered():
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
            "horizon": self.horizon,
            "data": self.train_data.state_dict(),
            "classes": list(self.classes),
            "input_shape": list(self.input_shape),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.horizon = state["horizon"]
        self.train_data.load_state_dict(state["data"])


class LogReg(Classifier):
    """Multinomial logistic regression on the pixels (~92% on MNIST)."""

    name = "logreg"
    Config = LogRegConfig
    default_epochs = 5

    @classmethod
    def build_body(cls, config: LogRegConfig, shape: tuple[int, int, int]) -> tuple[nn.Module, int]:
        return models.logreg_body(shape)


class MLP(Classifier):
    """Fully connected ReLU network with dropout (>= 98% on MNIST)."""

    name = "mlp"
    Config = MLPConfig
    default_epochs = 10

    @classmethod
    def build_body(cls, config: MLPConfig, shape: tuple[int, int, int]) -> tuple[nn.Module, int]:
        return models.mlp_body(shape, config.hidden, config.dropout)


class CNN(Classifier):
    """Small fast convnet (conv-BN-ReLU-pool blocks), on-device crop augmentation (>= 99.5% on MNIST)."""

    name = "cnn"
    Config = CNNConfig
    default_epochs = 10

    @classmethod
    def build_body(cls, config: CNNConfig, shape: tuple[int, int, int]) -> tuple[nn.Module, int]:
        return models.cnn_body(shape, config.widths, config.convs_per_block)


ALGORITHMS: dict[str, type[Classifier]] = {cls.name: cls for cls in (LogReg, MLP, CNN)}


class FeatureExtractor(nn.Module):
    """images (uint8 0..255 or float 0..1, N x C x H x W) -> (penultimate features, logits)."""

    def __init__(self, classifier: models.ImageClassifier) -> None:
        super().__init__()
        self.classifier = classifier

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.classifier.features(images)
        return features, self.classifier.head(features)


def load_feature_extractor(run_dir: str | Path, device: str | torch.device = "cpu") -> FeatureExtractor:
    """Rebuild a trained logreg/mlp/cnn from its run directory (best.pt, else latest.pt), in eval mode."""
    run_dir = Path(run_dir)
    config_path = run_dir / "config.yaml"
    if not config_path.is_file():
        raise LabError(f"{run_dir} is not a run directory (no config.yaml); pass the folder `lab train cnn` made")
    doc = yaml.safe_load(config_path.read_text(encoding="utf-8")) or {}
    algo = ALGORITHMS.get(str(doc.get("algo")))
    if algo is None:
        raise LabError(f"{run_dir} is a '{doc.get('algo')}' run; a feature extractor needs a {', '.join(ALGORITHMS)} run")
    best = run_dir / "checkpoints" / "best.pt"
    state = load_checkpoint(best if best.is_file() else run_dir / "checkpoints" / "latest.pt")["algorithm"]
    hints = typing.get_type_hints(algo.Config)
    values = {k: convert(v, hints[k], k) for k, v in (doc.get("config") or {}).items() if k in hints}
    config = algo.Config(**values)
    shape = tuple(int(v) for v in state["input_shape"])
    channels = shape[0]
    model = algo.build_model(config, shape, len(state["classes"]), [0.0] * channels, [1.0] * channels)
    model.load_state_dict(state["model"])  # brings the trained normalisation buffers too
    model.input_shape = shape
    return FeatureExtractor(model).to(device).eval()


@hookimpl
def register_algorithms(register) -> None:
    for cls in ALGORITHMS.values():
        register(cls)


# ---------------------------------------------------------------- the generators' yardstick

REFERENCE_EPOCHS = 2  # the default cnn reaches ~99% test accuracy on MNIST in 2 epochs
CACHE_FOLDER = ".lab-classifiers"


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fit_reference_cnn(images: torch.Tensor, labels: torch.Tensor, device: torch.device) -> models.ImageClassifier:
    """The default `cnn`, trained for REFERENCE_EPOCHS on all of `images` with seed 0."""
    config = CNNConfig()
    classes = int(labels.max()) + 1
    model = CNN.build_model(config, tuple(images.shape[1:]), classes, *channel_stats(images)).to(device)
    data = DataBuffer(images, labels, device, min(config.batch_size, len(images)), seed=0, drop_last=True,
                      crop_padding=config.crop_padding, normalize=None)
    optimizer = make_optimizer(model, config)
    horizon = REFERENCE_EPOCHS * len(data)
    schedule = warmup_decay(config.learning_rate, horizon, config.warmup)
    for step in range(horizon):
        training_step(model, optimizer, data.next(), schedule(step), config.label_smoothing)
    return model.eval()


def reference_classifier(data: ImageDataset, data_dir: Path | None, device: torch.device,
                         run_dir: str | None = None) -> tuple[FeatureExtractor, str, str]:
    """(classifier, where it came from, sha256 of its file) for Frechet distances and class checks.

    `run_dir` (a generator's `--classifier`): a logreg/mlp/cnn run trained on images of this
    shape. Without it, the default `cnn` trained once on `data`'s training split and cached
    under DATA_DIR/.lab-classifiers/ by a hash of the data, so every run on the same data
    measures in the same feature space; the run records the file's sha256.
    """
    if run_dir is not None:
        extractor = load_feature_extractor(run_dir, device)
        shape = tuple(int(v) for v in extractor.classifier.input_shape)
        if shape != data.image_shape:
            raise LabError(f"--classifier {run_dir} was trained on {shape} images; {data.name} has "
                           f"{data.image_shape}: train one on this data (lab train cnn --data ...)")
        best = Path(run_dir) / "checkpoints" / "best.pt"
        return extractor, str(run_dir), file_sha256(best if best.is_file() else Path(run_dir) / "checkpoints" / "latest.pt")
    labelled(data, "the reference classifier")
    digest = hashlib.sha256(data.train_images.numpy().tobytes() + data.train_labels.numpy().tobytes()).hexdigest()
    folder = (data_dir or Path.cwd()) / CACHE_FOLDER
    path = folder / f"cnn-{digest[:16]}.pt"
    if not path.is_file():
        print(f"note: training the reference cnn for {data.name} once ({REFERENCE_EPOCHS} epochs); "
              f"cached at {path}", file=sys.stderr, flush=True)
        model = fit_reference_cnn(data.train_images, data.train_labels, device)
        state = {"model": {k: v.cpu() for k, v in model.state_dict().items()},
                 "classes": int(data.train_labels.max()) + 1, "input_shape": list(data.image_shape)}
        save_checkpoint({"algo": "cnn", "global_step": 0, "algorithm": state}, path)  # the shape load_checkpoint checks
    try:
        state = load_checkpoint(path)["algorithm"]
    except LabError:
        raise LabError(f"the cached reference classifier {path} is unreadable; delete it and the next run "
                       "trains it again") from None
    shape = tuple(int(v) for v in state["input_shape"])
    model = CNN.build_model(CNNConfig(), shape, int(state["classes"]), [0.0] * shape[0], [1.0] * shape[0])
    model.load_state_dict(state["model"])
    model.input_shape = shape
    return FeatureExtractor(model).to(device).eval(), str(path), file_sha256(path)
