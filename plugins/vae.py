"""`vae`: a variational autoencoder (Kingma & Welling 2014), MLP or conv encoder/decoder.

Reads top to bottom: the model, the negative ELBO, one training step, evaluation, media.
On MNIST the likelihood is Bernoulli on dynamically binarised digits (each batch draws new
binary pixels with the pixel intensity as probability, as the IWAE paper does), so
`eval/nelbo` is in nats per image and comparable with the literature (86.8 nats: the IWAE
paper's one-stochastic-layer VAE, as a 5,000-sample bound). Other data gets a Gaussian
likelihood with a learned per-channel scale (a density, so its nats are not comparable).

`val/nelbo` on 5,000 held-out training images chooses best.pt; `eval/nelbo` is the test
split, binarised once with a fixed seed. `lab eval` adds `eval/iw_nll`, the importance-
weighted bound with `iw_samples` samples on the first `iw_images` test images; `--iw-k K`
trains on that bound with K samples (the IWAE), tighter than the ELBO it otherwise trains on.

A likelihood does not say whether samples look right (a VAE's are blurry), so each evaluation
also scores `fld_samples` decoded samples (the decoder's mean images) as `gan` and
`diffusion` are scored: `eval/fld` beside `eval/fld_floor`, `eval/kid`, `eval/precision` and
`eval/recall` (`lab.generative.quality`), where the data has labels or `--classifier` is given.
"""

from __future__ import annotations

import itertools
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

from lab.api import Context, LabError, check_ranges, hookimpl, option
from lab.buffers.data import DataBuffer
from lab.generative.images import save_grid, to_uint8
from lab.generative.quality import SampledImageGenerator, SampleQualityConfig, has_yardstick
from lab.schedules import linear

LOG_2PI = math.log(2 * math.pi)


@dataclass
class VAEConfig(SampleQualityConfig):
    # conv: 98.5 nats on MNIST after 10 epochs, the mlp 101.7
    arch: Literal["mlp", "conv"] = option("conv", "encoder/decoder: conv or mlp")
    latent_dim: int = option(32, "size of the latent code z")
    hidden: tuple[int, ...] = option((512, 256), "mlp hidden sizes (the decoder mirrors them)")
    channels: tuple[int, ...] = option((32, 64), "conv widths, each halving H and W")
    likelihood: Literal["auto", "bernoulli", "gaussian"] = option(
        "auto", "auto: bernoulli on binarised MNIST-like data, gaussian otherwise")
    learning_rate: float = option(1e-3, "Adam learning rate")
    lr_decay: bool = option(True, "decay the learning rate linearly to 0 over the run")
    batch_size: int = option(128, "training minibatch size")
    eval_batch_size: int = option(1000, "batch size for the held-out passes")
    iw_samples: int = option(5000, "importance samples for eval/iw_nll (lab eval only)")
    iw_images: int = option(1000, "test images eval/iw_nll is estimated on (lab eval only)")
    iw_k: int = option(1, "train on the importance-weighted bound with k samples of z (IWAE); 1: the ELBO")

    def __post_init__(self) -> None:
        super().__post_init__()
        check_ranges(self, positive=("latent_dim", "learning_rate", "batch_size", "eval_batch_size",
                                     "iw_samples", "iw_images", "iw_k"), at_least_one=("hidden", "channels"))


class Encoder(nn.Module):
    """x in [0, 1] -> (mean, log variance) of q(z|x)."""

    def __init__(self, body: nn.Module, width: int, latent: int) -> None:
        super().__init__()
        self.body, self.head = body, nn.Linear(width, 2 * latent)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_var = self.head(self.body(x)).chunk(2, dim=1)
        return mean, log_var


def build(config: VAEConfig, shape: tuple[int, int, int]) -> tuple[Encoder, nn.Module]:
    c, h, w = shape
    if config.arch == "mlp":
        sizes = [c * h * w, *config.hidden]
        enc: list[nn.Module] = [nn.Flatten()]
        for a, b in itertools.pairwise(sizes):
            enc += [nn.Linear(a, b), nn.ReLU()]
        dec: list[nn.Module] = []
        for a, b in itertools.pairwise([config.latent_dim, *config.hidden[::-1]]):
            dec += [nn.Linear(a, b), nn.ReLU()]
        dec += [nn.Linear(config.hidden[0] if config.hidden else config.latent_dim, c * h * w), nn.Unflatten(1, shape)]
        return Encoder(nn.Sequential(*enc), sizes[-1], config.latent_dim), nn.Sequential(*dec)
    scale = 2 ** len(config.channels)
    if h % scale or w % scale:
        raise LabError(f"--arch conv with {len(config.channels)} halvings needs sides divisible by {scale}; "
                       f"images are {h}x{w} (use --image-size or fewer --channels)")
    widths = [c, *config.channels]
    enc = []
    for a, b in itertools.pairwise(widths):
        enc += [nn.Conv2d(a, b, 4, 2, 1), nn.ReLU()]
    inner = (widths[-1], h // scale, w // scale)
    dec = [nn.Linear(config.latent_dim, math.prod(inner)), nn.ReLU(), nn.Unflatten(1, inner)]
    for i, (a, b) in enumerate(itertools.pairwise(widths[::-1])):
        dec += [nn.ConvTranspose2d(a, b, 4, 2, 1)] + ([nn.ReLU()] if i < len(widths) - 2 else [])
    return Encoder(nn.Sequential(*enc, nn.Flatten()), math.prod(inner), config.latent_dim), nn.Sequential(*dec)


class VAE(SampledImageGenerator):
    """Variational autoencoder; key metric val/nelbo (nats per image, lower is better)."""

    name = "vae"
    Config = VAEConfig
    key_metric = "val/nelbo"
    key_metric_mode = "min"
    default_epochs = 10

    def __init__(self, config: VAEConfig, ctx: Context) -> None:
        super().__init__(config, ctx)
        data = self.load_images()
        train_rows, val_rows = self.validation_rows(data)
        likelihood = config.likelihood
        if likelihood == "auto":
            likelihood = "bernoulli" if data.name.startswith("mnist") else "gaussian"
        self.bernoulli = likelihood == "bernoulli"
        self.shape = data.image_shape
        self.encoder, self.decoder = build(config, self.shape)
        self.encoder.to(ctx.device)
        self.decoder.to(ctx.device)
        self.log_scale = nn.Parameter(torch.zeros(self.shape[0], device=ctx.device))  # gaussian only
        self.optimizer = torch.optim.Adam(self.parameters(), lr=config.learning_rate)
        held_out = dict(device=ctx.device, batch_size=config.eval_batch_size, shuffle=False)
        self.train_data = DataBuffer(data.train_images[train_rows], None, ctx.device, config.batch_size,
                                     seed=ctx.seed, drop_last=True, rank=ctx.rank, world_size=ctx.world_size)
        self.val_images = self._fixed(DataBuffer(data.train_images[val_rows], None, **held_out), 1)
        self.test_images = self._fixed(DataBuffer(data.test_images, None, **held_out), 2)
        self.binarize = ctx.generator("binarize")
        self.noise = ctx.generator("latent")
        self.fixed_z = torch.randn(64, config.latent_dim, generator=torch.Generator().manual_seed(ctx.seed),
                                   ).to(ctx.device)
        self.data, self.val_rows = data, val_rows
        self.measured = has_yardstick(data, config.classifier)
        if ctx.training and self.measured:  # now, so config.yaml records the classifier's hash
            self.sample_quality()
        elif ctx.training:
            print(f"note: {data.name} has no labels, so no classifier measures the samples (no eval/fld); "
                  "pass --classifier RUN_DIR of a cnn trained on such images to have them", file=sys.stderr)

    def _fixed(self, split: DataBuffer, seed: int) -> torch.Tensor:
        """The held-out images as the model sees them; binarised once with a fixed seed."""
        images = torch.cat([batch.images for batch in split.ordered()])
        if self.bernoulli:
            images = torch.bernoulli(images, generator=torch.Generator(images.device).manual_seed(seed))
        return images

    def parameters(self) -> list[nn.Parameter]:
        return [*self.encoder.parameters(), *self.decoder.parameters(), self.log_scale]

    # ------------------------------------------------------------------ the bound

    def log_likelihood(self, x: torch.Tensor, decoded: torch.Tensor) -> torch.Tensor:
        """log p(x|z) per image, summed over pixels (nats)."""
        if self.bernoulli:
            return -F.binary_cross_entropy_with_logits(decoded, x, reduction="none").flatten(1).sum(1)
        scale = self.log_scale.view(1, -1, 1, 1)
        z = (x - torch.sigmoid(decoded)) * torch.exp(-scale)
        return (-0.5 * (z * z + LOG_2PI) - scale).flatten(1).sum(1)

    def nelbo(self, x: torch.Tensor, noise: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(negative ELBO, KL, reconstruction) per image; z drawn with `noise` (None: z = mean)."""
        mean, log_var = self.encoder(x)
        z = mean
        if noise is not None:
            z = mean + torch.randn(mean.shape, generator=noise, device=mean.device) * torch.exp(0.5 * log_var)
        recon = -self.log_likelihood(x, self.decoder(z))
        kl = 0.5 * (mean.pow(2) + log_var.exp() - 1 - log_var).sum(1)
        return recon + kl, kl, recon

    def log_weights(self, x: torch.Tensor, mean: torch.Tensor, log_var: torch.Tensor,
                    eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(log p(x, z_k) - log q(z_k|x), log p(x|z_k)) for z_k = mean + eps_k * std: eps (K, B, D) -> (K, B) each."""
        z = mean + eps * torch.exp(0.5 * log_var)
        decoded = self.decoder(z.flatten(0, 1))
        log_px = self.log_likelihood(x.repeat(len(eps), 1, 1, 1), decoded).view(len(eps), -1)
        log_pz = -0.5 * (z.pow(2) + LOG_2PI).sum(-1)
        log_qz = -0.5 * (eps.pow(2) + LOG_2PI + log_var).sum(-1)
        return log_px + log_pz - log_qz, log_px

    def iw_bound(self, x: torch.Tensor, k: int, noise: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(-log of the k-sample importance-weighted bound, KL, reconstruction of the first
        sample) per image (Burda et al. 2016): tighter than the ELBO as k grows."""
        mean, log_var = self.encoder(x)
        eps = torch.randn((k, *mean.shape), generator=noise, device=mean.device)
        weights, log_px = self.log_weights(x, mean, log_var, eps)
        kl = 0.5 * (mean.pow(2) + log_var.exp() - 1 - log_var).sum(1)
        return -(torch.logsumexp(weights, 0) - math.log(k)), kl.detach(), -log_px[0].detach()

    def train_step(self) -> dict[str, float]:
        lr = self.config.learning_rate
        if self.config.lr_decay:
            lr = linear(lr, 0.0, self.ctx.total_steps)(self.global_step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        x = self.train_data.next().images
        if self.bernoulli:
            x = torch.bernoulli(x, generator=self.binarize)
        k = self.config.iw_k
        loss, kl, recon = (v.mean() for v in (self.nelbo(x, self.noise) if k == 1 else self.iw_bound(x, k, self.noise)))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.global_step += 1
        return {"train/loss": loss.item(), "train/kl": kl.item(), "train/recon": recon.item(), "train/lr": lr}

    @torch.inference_mode()
    def held_out(self, images: torch.Tensor) -> tuple[float, float, float]:
        noise = self.ctx.rng.eval_generator()
        total = torch.zeros(3, device=self.ctx.device)
        for start in range(0, len(images), self.config.eval_batch_size):
            self.ctx.check_stop()  # a whole split: a stop ends the evaluation within seconds
            parts = self.nelbo(images[start : start + self.config.eval_batch_size], noise)
            total += torch.stack([p.sum() for p in parts])
        nelbo, kl, recon = (total / len(images)).tolist()
        return nelbo, kl, recon

    @torch.inference_mode()
    def iw_nll(self, images: torch.Tensor, samples: int, chunk: int = 500) -> float:
        """-log p(x) by importance sampling with q(z|x): log mean_k p(x, z_k) / q(z_k|x) (Burda et al.)."""
        noise = self.ctx.rng.eval_generator()
        total = 0.0
        for x in images.split(max(1, 20_000 // min(samples, chunk))):
            self.ctx.check_stop()
            mean, log_var = self.encoder(x)
            weights = []
            for k in range(0, samples, chunk):
                eps = torch.randn((min(chunk, samples - k), *mean.shape), generator=noise, device=mean.device)
                weights.append(self.log_weights(x, mean, log_var, eps)[0])
            total += -(torch.logsumexp(torch.cat(weights), 0) - math.log(samples)).sum().item()
        return total / len(images)

    def evaluate(self) -> dict[str, float]:
        self.encoder.eval(), self.decoder.eval()
        val, _, _ = self.held_out(self.val_images)
        nelbo, kl, recon = self.held_out(self.test_images)
        metrics = {"val/nelbo": val, "eval/nelbo": nelbo, "eval/kl": kl, "eval/recon": recon}
        if not self.ctx.training:  # `lab eval`: the tighter, slower bound
            metrics["eval/iw_nll"] = self.iw_nll(self.test_images[: self.config.iw_images], self.config.iw_samples)
        if self.measured:
            metrics.update(self.sample_quality().metrics(self.sample(self.config.fld_samples)))
        self.encoder.train(), self.decoder.train()
        return metrics

    # ------------------------------------------------------------------ pictures

    def pixels(self, decoded: torch.Tensor) -> torch.Tensor:
        """The decoder's mean image (Bernoulli probabilities or Gaussian means) as uint8."""
        return to_uint8(torch.sigmoid(decoded))

    @torch.inference_mode()
    def sample(self, n: int) -> torch.Tensor:
        self.decoder.eval()
        z = torch.randn(n, self.config.latent_dim, generator=self.ctx.rng.eval_generator(), device=self.ctx.device)
        return self.pixels(self.decoder(z))

    @torch.inference_mode()
    def write_media(self, media_dir: Path) -> dict[str, Path]:
        self.encoder.eval(), self.decoder.eval()
        step = f"step{self.global_step:09d}"
        samples = self.pixels(self.decoder(self.fixed_z))
        originals = self.test_images[:32]
        recon = self.pixels(self.decoder(self.encoder(originals)[0]))
        pairs = torch.stack([to_uint8(originals), recon], 1).view(-1, *self.shape)  # original, reconstruction
        rows = max(1, min(8, len(self.test_images) // 2))  # pairs of test images (a tiny folder has few)
        ends = self.encoder(self.test_images[: 2 * rows])[0].view(rows, 2, -1)
        weights = torch.linspace(0, 1, 10, device=ends.device).view(1, 10, 1)
        path = ends[:, :1] * (1 - weights) + ends[:, 1:] * weights  # (rows, 10 steps, D)
        lerp = self.pixels(self.decoder(path.flatten(0, 1)))
        self.encoder.train(), self.decoder.train()
        return {
            "media/samples": save_grid(samples, self.ctx.media_path(f"samples-{step}", ".png"), 8),
            "media/reconstructions": save_grid(pairs, self.ctx.media_path(f"reconstructions-{step}", ".png"), 8),
            "media/interpolations": save_grid(lerp, self.ctx.media_path(f"interpolations-{step}", ".png"), 10),
        }

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        return {"encoder": self.encoder.state_dict(), "decoder": self.decoder.state_dict(),
                "log_scale": self.log_scale.detach().clone(), "optimizer": self.optimizer.state_dict(),
                "data": self.train_data.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.encoder.load_state_dict(state["encoder"])
        self.decoder.load_state_dict(state["decoder"])
        with torch.no_grad():
            self.log_scale.copy_(state["log_scale"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.train_data.load_state_dict(state["data"])


@hookimpl
def register_algorithms(register) -> None:
    register(VAE)
