"""`diffusion`: a small U-Net that learns to remove noise, by flow matching or DDPM, sampled
by a deterministic few-step solver.

Reads top to bottom: the U-Net (a time embedding, residual blocks, self-attention at the
lowest resolution), one training step for each objective, the samplers, evaluation, media.

- `--objective flow` (default; Lipman et al. 2023, rectified flow as Liu et al. 2023): the
  straight path x_t = (1 - t) x + t e from an image x to noise e, t ~ U(0, 1); the network
  learns the velocity e - x. Sampling integrates dx/dt = v(x, t) from t = 1 to 0 with
  `--sample-steps` Heun steps (second order; 2 network passes a step, 1 for the last).
- `--objective eps` (Ho et al. 2020): 1,000 noise levels on DDPM's linear schedule
  (beta 1e-4 to 0.02); the network learns the noise e of x_t = sqrt(a_t) x + sqrt(1 - a_t) e.
  Sampling is DDIM with eta 0 (Song et al. 2021) over `--sample-steps` evenly spaced levels.

An exponential moving average of the weights (`--ema`) is what samples, evaluates and is
loaded by `lab.load`; the trained weights keep learning. With `--conditional` the class
label joins the time embedding and is dropped (a null class) for `--label-dropout` of the
batches, so one network is conditional and unconditional at once: sampling mixes the two by
classifier-free guidance (Ho & Salimans 2022), (1 + w) cond - w uncond for `--guidance w`.

Quality is measured as for `gan` (`lab.generative.quality`): `eval/fld` against the test
images beside its floor, `eval/kid`, `eval/precision` / `eval/recall`, and `val/fld` (held-out
training images) choosing best.pt. Sampling is the costly part (every image takes
2 x `--sample-steps` - 1 network passes with flow), so evaluations draw `--fld-samples`
images: 2,000 by default, where `gan` draws 10,000.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

from lab.api import Context, LabError, check_ranges, hookimpl, option
from lab.buffers.data import DataBuffer
from lab.ema import WeightAverage
from lab.generative.images import save_grid, to_uint8
from lab.generative.quality import SampledImageGenerator, SampleQualityConfig
from lab.schedules import warmup_decay

DDPM_LEVELS, BETA_START, BETA_END = 1000, 1e-4, 0.02


@dataclass
class DiffusionConfig(SampleQualityConfig):
    objective: Literal["flow", "eps"] = option("flow", "flow (flow matching, velocity) or eps (DDPM, noise)")
    widths: tuple[int, ...] = option((32, 64, 64), "U-Net channels per resolution, each halving H and W")
    learning_rate: float = option(1e-3, "Adam learning rate (warm-up, then linear decay to 0)")
    warmup: float = option(0.05, "fraction of the run warming the learning rate up")
    lr_decay: bool = option(True, "decay the learning rate linearly to 0 over the run (else constant after warm-up)")
    batch_size: int = option(128, "images per step")
    ema: float = option(0.999, "decay of the weights' moving average that samples")
    sample_steps: int = option(8, "solver steps per sample (flow: Heun; eps: DDIM)")
    conditional: bool = option(False, "condition on the class label (classifier-free guidance)")
    label_dropout: float = option(0.1, "share of batches trained without their label (conditional)")
    guidance: float = option(0.0, "classifier-free guidance weight w: (1 + w) cond - w uncond")
    fld_samples: int = option(2000, "generated images per evaluation (sampling is the costly part)")

    def __post_init__(self) -> None:
        super().__post_init__()
        check_ranges(self, positive=("learning_rate", "batch_size", "sample_steps"),
                     non_negative=("guidance",), fraction=("ema", "label_dropout"))
        if not 0 <= self.warmup < 1:
            raise ValueError(f"--warmup is a fraction of the run in [0, 1), got {self.warmup}")
        if not self.widths or min(self.widths) < 8 or any(w % 8 for w in self.widths):
            raise ValueError(f"--widths takes multiples of 8 (GroupNorm groups of 8), got {self.widths}")


# ---------------------------------------------------------------------------- the U-Net


def time_features(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal features of t in [0, 1] (scaled to 1,000 as DDPM's step index)."""
    half = dim // 2
    frequencies = torch.exp(-math.log(10_000.0) * torch.arange(half, device=t.device) / half)
    angles = 1000.0 * t.float().unsqueeze(1) * frequencies
    return torch.cat([angles.sin(), angles.cos()], dim=1)


class ResBlock(nn.Module):
    """GroupNorm, SiLU, 3x3 conv, plus the embedding, GroupNorm, SiLU, 3x3 conv; residual."""

    def __init__(self, channels_in: int, channels: int, embedding: int) -> None:
        super().__init__()
        self.norm1, self.conv1 = nn.GroupNorm(8, channels_in), nn.Conv2d(channels_in, channels, 3, padding=1)
        self.embed = nn.Linear(embedding, channels)
        self.norm2, self.conv2 = nn.GroupNorm(8, channels), nn.Conv2d(channels, channels, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)  # each block starts as the identity
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(channels_in, channels, 1) if channels_in != channels else nn.Identity()

    def forward(self, x: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x))) + self.embed(embedding)[:, :, None, None]
        return self.skip(x) + self.conv2(F.silu(self.norm2(h)))


class SelfAttention(nn.Module):
    """One head of self-attention over the pixels of a (small) feature map; residual."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm, self.qkv = nn.GroupNorm(8, channels), nn.Conv2d(channels, 3 * channels, 1)
        self.out = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).flatten(2).transpose(1, 2).chunk(3, dim=2)  # (B, HW, C) each
        attended = F.scaled_dot_product_attention(q, k, v)
        return x + self.out(attended.transpose(1, 2).reshape(b, c, h, w))


class UNet(nn.Module):
    """(noisy image, t in [0, 1], label or None) -> a prediction of the image's shape.

    One residual block per resolution on the way down and up (skip connections between
    them), two around self-attention at the lowest resolution. `classes` > 0 adds a label
    embedding with one extra row, the null label of unconditional passes."""

    def __init__(self, channels: int, widths: tuple[int, ...], classes: int = 0,
                 layout: torch.memory_format = torch.channels_last) -> None:
        super().__init__()
        self.layout = layout
        embedding = 4 * widths[0]
        self.base = widths[0]
        self.time = nn.Sequential(nn.Linear(widths[0], embedding), nn.SiLU(), nn.Linear(embedding, embedding))
        self.label = nn.Embedding(classes + 1, embedding) if classes else None
        self.stem = nn.Conv2d(channels, widths[0], 3, padding=1)
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        previous = widths[0]
        for i, width in enumerate(widths):
            self.down.append(ResBlock(previous, width, embedding))
            self.downsample.append(nn.Conv2d(width, width, 3, stride=2, padding=1) if i < len(widths) - 1
                                   else nn.Identity())
            previous = width
        self.middle = nn.ModuleList([ResBlock(previous, previous, embedding), ResBlock(previous, previous, embedding)])
        self.attention = SelfAttention(previous)
        self.up = nn.ModuleList()
        for width in reversed(widths):
            self.up.append(ResBlock(previous + width, width, embedding))
            previous = width
        self.head = nn.Sequential(nn.GroupNorm(8, previous), nn.SiLU(), nn.Conv2d(previous, channels, 3, padding=1))

    def forward(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        embedding = self.time(time_features(t, self.base))
        if self.label is not None:
            embedding = embedding + self.label(labels)
        h = self.stem(x.contiguous(memory_format=self.layout))
        skips = []
        for block, downsample in zip(self.down, self.downsample, strict=True):
            h = block(h, embedding)
            skips.append(h)
            h = downsample(h)
        h = self.attention(self.middle[0](h, embedding))
        h = self.middle[1](h, embedding)
        for block in self.up:
            skip = skips.pop()
            if h.shape[-1] != skip.shape[-1]:
                h = F.interpolate(h, size=skip.shape[-2:], mode="nearest")
            h = block(torch.cat([h, skip], dim=1), embedding)
        return self.head(h)


# ---------------------------------------------------------------------------- the model


class Diffusion(SampledImageGenerator):
    """Flow matching or DDPM on a U-Net; key metric val/fld (lower is better)."""

    name = "diffusion"
    Config = DiffusionConfig
    key_metric = "val/fld"
    key_metric_mode = "min"
    default_epochs = 10
    supports_bf16 = True

    def __init__(self, config: DiffusionConfig, ctx: Context) -> None:
        super().__init__(config, ctx)
        data = self.load_images()
        self.shape = data.image_shape
        scale = 2 ** (len(config.widths) - 1)
        if self.shape[1] % scale or self.shape[2] % scale:
            raise LabError(f"--widths with {len(config.widths)} resolutions needs sides divisible by {scale}; "
                           f"{data.name} is {self.shape[1]}x{self.shape[2]} (pass --image-size or fewer --widths)")
        if config.conditional and data.train_labels is None:
            raise LabError(f"--conditional needs class labels; {data.name} has none")
        train_rows, val_rows = self.validation_rows(data)
        self.classes = int(data.train_labels.max()) + 1 if config.conditional else 0
        # NHWC convolutions: 1.2x an fp32 training step on the CPU (oneDNN), fine on cuDNN; under
        # bf16 on an AMX CPU NCHW is the faster one (a step of 128: 0.93 s against 1.17 s, 1 thread)
        layout = torch.contiguous_format if ctx.device.type == "cpu" and ctx.precision == "bf16" else torch.channels_last
        self.net = UNet(self.shape[0], config.widths, self.classes, layout).to(ctx.device, memory_format=layout)
        self.ema = WeightAverage(self.net, config.ema)
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=config.learning_rate)
        labels = data.train_labels[train_rows] if data.train_labels is not None else None
        self.train_data = DataBuffer(data.train_images[train_rows], labels, ctx.device, config.batch_size,
                                     seed=ctx.seed, drop_last=True, normalize="symmetric",
                                     rank=ctx.rank, world_size=ctx.world_size)
        alphas = torch.cumprod(1.0 - torch.linspace(BETA_START, BETA_END, DDPM_LEVELS, dtype=torch.float64), 0)
        self.alpha_bar = alphas.float().to(ctx.device)
        self.noise = ctx.generator("noise")
        self.fixed_noise = torch.randn(100, *self.shape, generator=torch.Generator().manual_seed(ctx.seed))
        self.data, self.val_rows = data, val_rows
        if ctx.training:
            self.sample_quality()

    # ------------------------------------------------------------------ training

    def train_step(self) -> dict[str, float]:
        c = self.config
        lr = warmup_decay(c.learning_rate, self.ctx.total_steps, c.warmup,
                          final=0.0 if c.lr_decay else c.learning_rate)(self.global_step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        batch = self.train_data.next()
        x, n, device = batch.images, len(batch.images), self.ctx.device
        noise = torch.randn(x.shape, generator=self.noise, device=device)
        labels = None
        if self.classes:
            dropped = torch.rand(n, generator=self.noise, device=device) < c.label_dropout
            labels = torch.where(dropped, self.classes, batch.labels.long())
        if c.objective == "flow":
            t = torch.rand(n, generator=self.noise, device=device)
            ts = t.view(-1, 1, 1, 1)
            noisy, target = (1 - ts) * x + ts * noise, noise - x
        else:
            level = torch.randint(DDPM_LEVELS, (n,), generator=self.noise, device=device)
            a = self.alpha_bar[level].view(-1, 1, 1, 1)
            noisy, t, target = a.sqrt() * x + (1 - a).sqrt() * noise, level / DDPM_LEVELS, noise
        with self.ctx.autocast():
            prediction = self.net(noisy, t, labels)
        loss = F.mse_loss(prediction.float(), target)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.global_step += 1
        self.ema.update(self.global_step)
        return {"train/loss": loss.item(), "train/lr": lr}

    # ------------------------------------------------------------------ sampling

    def predict(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        """The EMA network's prediction (fp32, whatever `--precision` ran the pass in), with
        classifier-free guidance where asked."""
        if labels is None or self.config.guidance == 0:
            with self.ctx.autocast():
                return self.ema.model(x, t, labels).float()
        null = torch.full_like(labels, self.classes)
        with self.ctx.autocast():
            both = self.ema.model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([labels, null])).float()
        cond, uncond = both.chunk(2)
        return (1 + self.config.guidance) * cond - self.config.guidance * uncond

    def solve(self, x: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        """Noise -> images in [-1, 1] in `sample_steps` deterministic steps."""
        steps, n = self.config.sample_steps, len(x)
        if self.config.objective == "flow":  # Heun on dx/dt = v from t = 1 to t = 0
            times = torch.linspace(1.0, 0.0, steps + 1, device=x.device)
            for now, then in itertools.pairwise(times):
                self.ctx.check_stop()  # sampling thousands of images is long: a stop ends it within seconds
                v = self.predict(x, now.expand(n), labels)
                guess = x + (then - now) * v
                if then > 0:
                    guess = x + (then - now) * 0.5 * (v + self.predict(guess, then.expand(n), labels))
                x = guess
            return x.clamp(-1, 1)
        levels = torch.linspace(DDPM_LEVELS - 1, 0, steps, device=x.device).round().long()  # DDIM, eta 0
        for i, level in enumerate(levels):
            self.ctx.check_stop()
            a = self.alpha_bar[level]
            eps = self.predict(x, (level / DDPM_LEVELS).expand(n), labels)
            x0 = ((x - (1 - a).sqrt() * eps) / a.sqrt()).clamp(-1, 1)
            a_next = self.alpha_bar[levels[i + 1]] if i + 1 < steps else torch.ones_like(a)
            x = a_next.sqrt() * x0 + (1 - a_next).sqrt() * eps
        return x.clamp(-1, 1)

    @torch.inference_mode()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        generator = generator or self.ctx.rng.eval_generator()
        images = []
        for start in range(0, n, 500):
            m = min(500, n - start)
            x = torch.randn(m, *self.shape, generator=generator, device=self.ctx.device)
            labels = torch.randint(self.classes, (m,), generator=generator, device=self.ctx.device) \
                if self.classes else None
            images.append(to_uint8(self.solve(x, labels), low=-1.0))
        return torch.cat(images)

    # ------------------------------------------------------------------ media

    @torch.inference_mode()
    def write_media(self, media_dir: Path) -> dict[str, Path]:
        labels = torch.arange(100, device=self.ctx.device) % self.classes if self.classes else None
        images = to_uint8(self.solve(self.fixed_noise.to(self.ctx.device), labels), low=-1.0)
        path = self.ctx.media_path(f"samples-step{self.global_step:09d}", ".png")
        return {"media/samples": save_grid(images, path, 10)}

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        return {"net": self.net.state_dict(), "ema": self.ema.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "data": self.train_data.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["net"])
        self.ema.model.load_state_dict(state["ema"])
        if "optimizer" in state:
            self.optimizer.load_state_dict(state["optimizer"])
            self.train_data.load_state_dict(state["data"])


@hookimpl
def register_algorithms(register) -> None:
    register(Diffusion)
