"""`gan`: DCGAN (Radford et al. 2016) with the non-saturating loss, optionally class-conditional.

Reads top to bottom: the two networks, one training step (a discriminator update, then a
generator update), sampling, media; evaluation is `SampledImageGenerator`'s.

Quality is `eval/fld`, the Frechet distance between 10,000 generated and the real test
images in the penultimate features of a `cnn` the lab trains on the same data (`--classifier
RUN_DIR` to bring your own), logged beside `eval/fld_floor`, the same distance between real
training and test images. Beside it, in the same features: `eval/kid` (the kernel distance:
unbiased, about 0 for a perfect generator at any sample size, with `eval/kid_std` over its
subsets) and `eval/precision` / `eval/recall` (are the samples realistic; is every kind of
image drawn), all from `lab.generative.quality`. best.pt is chosen on `val/fld`
(against held-out training images).

`--loss hinge` and `--spectral-norm` give SN-GAN's discriminator objective and weight
normalisation (Miyato et al. 2018; its discriminator then has no BatchNorm); `--g-lr`/`--d-lr`
apart are the two time-scale update rule (TTUR, Heusel et al. 2017).
`--ema 0.999` samples from a moving average of the generator's weights (`lab.ema`), its
BatchNorm statistics re-estimated for the averaged weights before each use. The default
(0) samples from the live generator, as the DCGAN paper did: on the mnist preset (5 epochs,
seed 1) the average moved `eval/fld` from 3.53 to 3.63 and `eval/kid` from 0.156 to 0.103,
no gain on the key metric.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.parametrizations import spectral_norm

from lab.api import Context, LabError, check_ranges, hookimpl, option
from lab.buffers.data import DataBuffer
from lab.ema import WeightAverage, recompute_batchnorm
from lab.generative.images import save_grid, to_uint8
from lab.generative.quality import SampledImageGenerator, SampleQualityConfig


@dataclass
class GANConfig(SampleQualityConfig):
    latent_dim: int = option(100, "size of the noise vector z")
    g_width: int = option(64, "generator channels at full resolution (doubling per halving)")
    d_width: int = option(64, "discriminator channels after its first convolution")
    g_lr: float = option(2e-4, "generator Adam learning rate")
    d_lr: float = option(2e-4, "discriminator Adam learning rate")
    beta1: float = option(0.5, "Adam beta1 for both networks")
    beta2: float = option(0.999, "Adam beta2 for both networks")
    batch_size: int = option(64, "real images per step (and as many generated)")
    conditional: bool = option(False, "condition both networks on the class label")
    ema: float = option(0.0, "decay of the generator weights' moving average that samples (0: the live generator)")
    loss: Literal["bce", "hinge"] = option("bce", "adversarial loss: bce (non-saturating, DCGAN) or hinge (SN-GAN, "
                                                  "BigGAN)")
    spectral_norm: bool = option(False, "spectrally normalise the discriminator's weights (and drop its BatchNorm)")

    def __post_init__(self) -> None:
        super().__post_init__()
        check_ranges(self, positive=("latent_dim", "g_width", "d_width", "g_lr", "d_lr", "batch_size"),
                     below_one=("beta1", "beta2", "ema"))


def halvings(size: int) -> int:
    """How many stride-2 stages lead from `size` down to a 4..7 pixel base (28 -> 7: 2, 64 -> 4: 4)."""
    stages = 0
    while size % 2 == 0 and size // 2 >= 4:
        size //= 2
        stages += 1
    return stages


def dcgan_init(module: nn.Module) -> None:
    """The DCGAN paper's N(0, 0.02) weights (BatchNorm scales N(1, 0.02))."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if getattr(module, "bias", None) is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


class Generator(nn.Module):
    """z (and a label) -> a projected base map -> stride-2 transposed convolutions -> tanh image."""

    def __init__(self, shape: tuple[int, int, int], latent: int, width: int, classes: int) -> None:
        super().__init__()
        c, h, w = shape
        stages = halvings(h)
        self.base = (width * 2 ** (stages - 1), h >> stages, w >> stages)
        self.embed = nn.Embedding(classes, latent) if classes else None
        self.project = nn.Sequential(nn.Linear(latent, self.base[0] * self.base[1] * self.base[2], bias=False),
                                     nn.Unflatten(1, self.base), nn.BatchNorm2d(self.base[0]), nn.ReLU(True))
        layers: list[nn.Module] = []
        channels = self.base[0]
        for _ in range(stages - 1):
            layers += [nn.ConvTranspose2d(channels, channels // 2, 4, 2, 1, bias=False),
                       nn.BatchNorm2d(channels // 2), nn.ReLU(True)]
            channels //= 2
        self.up = nn.Sequential(*layers, nn.ConvTranspose2d(channels, c, 4, 2, 1), nn.Tanh())

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.embed is not None:
            z = z * self.embed(labels)  # multiplicative conditioning keeps z's scale
        return self.up(self.project(z))


class Discriminator(nn.Module):
    """Image -> stride-2 convolutions (LeakyReLU 0.2, BatchNorm after the first) -> one logit;
    conditional: plus a projection term <embed(label), features> (Miyato & Koyama 2018).
    `spectral`: every weight spectrally normalised (Miyato et al. 2018) and no BatchNorm, as
    in SN-GAN's discriminator."""

    def __init__(self, shape: tuple[int, int, int], width: int, classes: int, spectral: bool = False) -> None:
        super().__init__()
        c, h, w = shape
        stages = halvings(h)
        norm = spectral_norm if spectral else (lambda layer: layer)
        layers: list[nn.Module] = [norm(nn.Conv2d(c, width, 4, 2, 1)), nn.LeakyReLU(0.2, True)]
        channels = width
        for _ in range(stages - 1):
            conv = norm(nn.Conv2d(channels, channels * 2, 4, 2, 1, bias=spectral))
            layers += [conv, *([] if spectral else [nn.BatchNorm2d(channels * 2)]), nn.LeakyReLU(0.2, True)]
            channels *= 2
        self.features = nn.Sequential(*layers, nn.Flatten())
        width_out = channels * (h >> stages) * (w >> stages)
        self.logit = norm(nn.Linear(width_out, 1))
        self.embed = norm(nn.Embedding(classes, width_out)) if classes else None

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        h = self.features(images)
        out = self.logit(h).squeeze(1)
        if self.embed is not None:
            out = out + (self.embed(labels) * h).sum(1)
        return out


class GAN(SampledImageGenerator):
    """DCGAN; key metric val/fld (lower is better)."""

    name = "gan"
    Config = GANConfig
    key_metric = "val/fld"
    key_metric_mode = "min"
    default_epochs = 5
    # a quarter of the arithmetic: ~1 min an epoch on 2 CPU cores
    presets: ClassVar[dict[str, dict[str, Any]]] = {"mnist": {"g_width": 32, "d_width": 32}}

    def __init__(self, config: GANConfig, ctx: Context) -> None:
        super().__init__(config, ctx)
        data = self.load_images()
        self.shape = data.image_shape
        if halvings(self.shape[1]) < 2 or self.shape[1] != self.shape[2]:
            raise LabError(f"gan needs square images whose side halves twice to 4-7 pixels (28, 32, 64, ...); "
                           f"{data.name} has {self.shape[1]}x{self.shape[2]}: pass --image-size 32")
        train_rows, val_rows = self.validation_rows(data)
        if config.conditional and data.train_labels is None:
            raise LabError(f"--conditional needs class labels; {data.name} has none")
        self.classes = int(data.train_labels.max()) + 1 if config.conditional else 0
        self.g = Generator(self.shape, config.latent_dim, config.g_width, self.classes).to(ctx.device)
        self.d = Discriminator(self.shape, config.d_width, self.classes, config.spectral_norm).to(ctx.device)
        self.g.apply(dcgan_init)
        if not config.spectral_norm:  # SN-GAN keeps PyTorch's default init under the normalisation
            self.d.apply(dcgan_init)
        self.g_ema = WeightAverage(self.g, config.ema) if config.ema > 0 else None
        betas = (config.beta1, config.beta2)
        self.g_opt = torch.optim.Adam(self.g.parameters(), lr=config.g_lr, betas=betas)
        self.d_opt = torch.optim.Adam(self.d.parameters(), lr=config.d_lr, betas=betas)
        labels = data.train_labels[train_rows] if data.train_labels is not None else None
        self.train_data = DataBuffer(data.train_images[train_rows], labels, ctx.device, config.batch_size,
                                     seed=ctx.seed, drop_last=True, normalize="symmetric",
                                     rank=ctx.rank, world_size=ctx.world_size)
        self.noise = ctx.generator("latent")
        fixed = torch.Generator().manual_seed(ctx.seed)
        self.fixed_z = torch.randn(100, config.latent_dim, generator=fixed).to(ctx.device)
        self.fixed_labels = torch.arange(100, device=ctx.device) % max(self.classes, 1)
        self.data, self.val_rows = data, val_rows
        if ctx.training:
            self.sample_quality()

    def labels_for(self, n: int, generator: torch.Generator | None) -> torch.Tensor | None:
        if not self.classes:
            return None
        if generator is None:  # grids: class i in column i
            return torch.arange(n, device=self.ctx.device) % self.classes
        return torch.randint(self.classes, (n,), generator=generator, device=self.ctx.device)

    # ------------------------------------------------------------------ training

    def train_step(self) -> dict[str, float]:
        batch = self.train_data.next()
        real, labels = batch.images, batch.labels if self.classes else None
        n = len(real)
        z = torch.randn(n, self.config.latent_dim, generator=self.noise, device=self.ctx.device)
        fake_labels = self.labels_for(n, self.noise)
        fake = self.g(z, fake_labels)

        # discriminator: real -> 1, generated -> 0 (hinge: real above +1, generated below -1)
        d_real, d_fake = self.d(real, labels), self.d(fake.detach(), fake_labels)
        if self.config.loss == "hinge":
            d_loss = F.relu(1.0 - d_real).mean() + F.relu(1.0 + d_fake).mean()
        else:
            d_loss = (F.binary_cross_entropy_with_logits(d_real, torch.ones_like(d_real))
                      + F.binary_cross_entropy_with_logits(d_fake, torch.zeros_like(d_fake)))
        self.d_opt.zero_grad(set_to_none=True)
        d_loss.backward()
        self.d_opt.step()

        # generator, non-saturating: maximise log D(G(z)) rather than minimise log(1 - D(G(z)));
        # hinge: raise D's score of the generated images
        d_on_fake = self.d(fake, fake_labels)
        if self.config.loss == "hinge":
            g_loss = -d_on_fake.mean()
        else:
            g_loss = F.binary_cross_entropy_with_logits(d_on_fake, torch.ones_like(d_on_fake))
        self.g_opt.zero_grad(set_to_none=True)
        g_loss.backward()
        self.g_opt.step()

        self.global_step += 1
        if self.g_ema is not None:
            self.g_ema.update(self.global_step)
        return {"train/d_loss": d_loss.item(), "train/g_loss": g_loss.item(),
                "train/d_real": torch.sigmoid(d_real).mean().item(), "train/d_fake": torch.sigmoid(d_fake).mean().item()}

    # ------------------------------------------------------------------ sampling and media

    def sampler(self) -> nn.Module:
        """The generator that samples, in eval mode: the weights' moving average with its
        BatchNorm statistics re-estimated on 10,000 draws of a fixed stream (so the same weights
        always sample alike), or the live generator under --ema 0."""
        if self.g_ema is None:
            return self.g.eval()
        stream = torch.Generator(self.ctx.device).manual_seed(0)
        batches = [(torch.randn(500, self.config.latent_dim, generator=stream, device=self.ctx.device),
                    self.labels_for(500, stream)) for _ in range(20)]
        recompute_batchnorm(self.g_ema.model, batches)
        return self.g_ema.model.eval()

    @torch.inference_mode()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        net = self.sampler()
        generator = generator or self.ctx.rng.eval_generator()
        images = []
        for start in range(0, n, 1000):
            self.ctx.check_stop()  # an evaluation's 10,000 samples: a stop ends it within seconds
            m = min(1000, n - start)
            z = torch.randn(m, self.config.latent_dim, generator=generator, device=self.ctx.device)
            images.append(to_uint8(net(z, self.labels_for(m, generator)), low=-1.0))
        self.g.train()
        return torch.cat(images)

    @torch.inference_mode()
    def write_media(self, media_dir: Path) -> dict[str, Path]:
        labels = self.fixed_labels if self.classes else None
        images = to_uint8(self.sampler()(self.fixed_z, labels), low=-1.0)
        self.g.train()
        path = self.ctx.media_path(f"samples-step{self.global_step:09d}", ".png")
        return {"media/samples": save_grid(images, path, 10)}

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        average = {} if self.g_ema is None else {"g_ema": self.g_ema.model.state_dict()}
        return {"g": self.g.state_dict(), "d": self.d.state_dict(), "g_opt": self.g_opt.state_dict(),
                "d_opt": self.d_opt.state_dict(), "data": self.train_data.state_dict(), **average}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.g.load_state_dict(state["g"])
        self.d.load_state_dict(state["d"])
        if self.g_ema is not None:  # a run from before --ema starts its average from the generator
            self.g_ema.model.load_state_dict(state.get("g_ema", state["g"]))
        if "g_opt" in state:
            self.g_opt.load_state_dict(state["g_opt"])
            self.d_opt.load_state_dict(state["d_opt"])
            self.train_data.load_state_dict(state["data"])


@hookimpl
def register_algorithms(register) -> None:
    register(GAN)
