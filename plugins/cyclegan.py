"""`cyclegan`: unpaired image-to-image translation (Zhu et al. 2017).

Reads top to bottom: the ResNet generator and PatchGAN discriminator of the reference
implementation, the image pool, one training step (both generators, then both
discriminators), evaluation, media. Defaults are the reference's: LSGAN loss, cycle weight
10, identity 0.5 (times the cycle weight), a pool of 50 generated images, Adam 2e-4 with
beta1 0.5, the learning rate constant for the first half of the run then decaying linearly
to zero. What depends on the image size is scaled to it: the reference's 9 residual blocks
and 70x70 patches are for 256-pixel images; at 28 pixels the discriminator has one
downsampling layer (16x16 patches) and `--res-blocks` defaults to 6.

Data: any `trainA/ trainB/ testA/ testB/` folder (`--data image-folder:PATH`) or
`mnist-styles:STYLE_A-STYLE_B`. Where domain B has labels (mnist-styles), a classifier
trained on B's training images scores `eval/class_preservation`: the fraction of test
digits of A, translated to B, that it reads as their own label (best.pt is chosen on the
same score over held-out training images of A). Where B's images can be measured (B has
labels, or `--classifier` is given), the test images of A translated to B are scored against
B's test images as the other generators' samples are (`lab.generative.quality`): `eval/fld`
beside `eval/fld_floor` (B's training against B's test images), `eval/kid`,
`eval/precision` and `eval/recall`: do the translations look like B, and cover all of it?
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn as nn
import torch.nn.functional as F

from lab.api import Context, LabError, check_ranges, hookimpl, option
from lab.buffers.data import DataBuffer
from lab.generative.base import ImageGenerator
from lab.generative.feature_metrics import NEIGHBOURS
from lab.generative.images import save_grid, to_uint8
from lab.generative.quality import SampleQuality, has_yardstick
from lab.schedules import linear


@dataclass
class CycleGANConfig:
    g_width: int = option(64, "generator channels after its first convolution (ngf)")
    d_width: int = option(64, "discriminator channels after its first convolution (ndf)")
    res_blocks: int = option(6, "residual blocks in each generator (reference: 9 at 256 px)")
    d_layers: int = option(0, "discriminator downsamplings; 0 scales the 70x70 patch to the image")
    g_lr: float = option(2e-4, "generators' Adam learning rate")
    d_lr: float = option(2e-4, "discriminators' Adam learning rate")
    beta1: float = option(0.5, "Adam beta1")
    decay_fraction: float = option(0.5, "last fraction of the run over which the lr decays to 0")
    lambda_cycle: float = option(10.0, "weight of the cycle-consistency L1 losses")
    lambda_identity: float = option(0.5, "identity L1 weight, relative to --lambda-cycle")
    pool_size: int = option(50, "generated images the discriminators also see again (0: none)")
    batch_size: int = option(1, "images of each domain per step")
    validation_size: int = option(1000, "training images of A held out to choose best.pt")
    classifier: str | None = option(None, "RUN_DIR of a classifier of domain B (default: the lab's cached cnn)")
    classifier_sha256: str | None = option(None, "filled in by the run: the classifier file's hash")
    image_size: int | None = option(None, "resize images to this square size")

    def __post_init__(self) -> None:
        check_ranges(
            self,
            positive=("g_width", "d_width", "g_lr", "d_lr", "batch_size", "validation_size"),
            non_negative=("res_blocks", "d_layers", "pool_size", "lambda_cycle", "lambda_identity"),
            fraction=("decay_fraction",),
        )


def norm(channels: int) -> nn.Module:
    return nn.InstanceNorm2d(channels)  # the reference's 'instance' norm: no affine, no running stats


class ResBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3), norm(channels), nn.ReLU(True),
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3), norm(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def resnet_generator(channels: int, width: int, blocks: int) -> nn.Sequential:
    """c7s1-w, d2w, d4w, R4w x blocks, u2w, uw, c7s1-C, tanh (images in [-1, 1])."""
    layers: list[nn.Module] = [nn.ReflectionPad2d(3), nn.Conv2d(channels, width, 7), norm(width), nn.ReLU(True)]
    for mult in (1, 2):
        layers += [nn.Conv2d(width * mult, width * mult * 2, 3, 2, 1), norm(width * mult * 2), nn.ReLU(True)]
    layers += [ResBlock(width * 4) for _ in range(blocks)]
    for mult in (4, 2):
        layers += [nn.ConvTranspose2d(width * mult, width * mult // 2, 3, 2, 1, output_padding=1),
                   norm(width * mult // 2), nn.ReLU(True)]
    layers += [nn.ReflectionPad2d(3), nn.Conv2d(width, channels, 7), nn.Tanh()]
    return nn.Sequential(*layers)


def patch_discriminator(channels: int, width: int, layers: int) -> nn.Sequential:
    """PatchGAN: `layers` stride-2 4x4 convolutions, one stride-1, then a map of real/fake logits."""
    net: list[nn.Module] = [nn.Conv2d(channels, width, 4, 2, 1), nn.LeakyReLU(0.2, True)]
    mult = 1
    for n in range(1, layers + 1):
        prev, mult = mult, min(2**n, 8)
        stride = 2 if n < layers else 1
        net += [nn.Conv2d(width * prev, width * mult, 4, stride, 1), norm(width * mult), nn.LeakyReLU(0.2, True)]
    net += [nn.Conv2d(width * mult, 1, 4, 1, 1)]
    return nn.Sequential(*net)


def scaled_d_layers(size: int) -> int:
    """The reference's 3 layers (70x70 patches) at 256 px and above, 2 from 64 px, else 1 (16x16)."""
    return 3 if size >= 256 else 2 if size >= 64 else 1


def init_weights(module: nn.Module) -> None:
    """The reference's N(0, 0.02) initialisation."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        nn.init.zeros_(module.bias)


class ImagePool:
    """The last `size` generated images; each new one is shown as is, or (probability 1/2,
    once the pool is full) swapped for a stored one, so discriminators also see older fakes."""

    def __init__(self, size: int, shape: tuple[int, ...], device: torch.device, generator: torch.Generator) -> None:
        self.size, self.generator = size, generator
        self.images = torch.zeros((size, *shape), device=device)
        self.count = 0

    def query(self, images: torch.Tensor) -> torch.Tensor:
        if self.size == 0:
            return images
        out = images.detach().clone()
        for i, image in enumerate(images.detach()):
            if self.count < self.size:
                self.images[self.count] = image
                self.count += 1
            elif torch.rand((), generator=self.generator, device=self.generator.device) < 0.5:
                slot = int(torch.randint(self.size, (), generator=self.generator, device=self.generator.device))
                out[i] = self.images[slot].clone()
                self.images[slot] = image
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"images": self.images[: self.count].clone(), "count": self.count}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.count = int(state["count"])
        self.images[: self.count] = state["images"]


def lsgan(logits: torch.Tensor, real: bool) -> torch.Tensor:
    return F.mse_loss(logits, torch.full_like(logits, 1.0 if real else 0.0))


class CycleGAN(ImageGenerator):
    """Unpaired translation A <-> B; key metric val/class_preservation where B has labels."""

    name = "cyclegan"
    Config = CycleGANConfig
    key_metric = "val/class_preservation"
    default_epochs = 3
    # mnist-styles on 2 CPU cores: a quarter of the reference width, half its blocks
    presets: ClassVar[dict[str, dict[str, Any]]] = {
        "mnist-styles*": {"g_width": 16, "d_width": 16, "res_blocks": 3, "batch_size": 16}}

    def __init__(self, config: CycleGANConfig, ctx: Context) -> None:
        super().__init__(config, ctx)
        data = self.load_images(unpaired=True)
        self.shape = data.a.image_shape
        if data.b.image_shape != self.shape:
            raise LabError(f"domains A {data.a.image_shape} and B {data.b.image_shape} differ in shape; pass --image-size")
        c, h, w = self.shape
        if h % 4 or w % 4:
            raise LabError(f"cyclegan halves the images twice: sides must be multiples of 4, got {h}x{w} (use --image-size)")
        train_rows, val_rows = self.validation_rows(data.a, "domain A")
        self.g_ab, self.g_ba = (resnet_generator(c, config.g_width, config.res_blocks).to(ctx.device) for _ in range(2))
        layers = config.d_layers or scaled_d_layers(min(h, w))
        self.d_a, self.d_b = (patch_discriminator(c, config.d_width, layers).to(ctx.device) for _ in range(2))
        for net in self.networks():
            net.apply(init_weights)
        betas = (config.beta1, 0.999)
        self.g_opt = torch.optim.Adam([*self.g_ab.parameters(), *self.g_ba.parameters()], lr=config.g_lr, betas=betas)
        self.d_opt = torch.optim.Adam([*self.d_a.parameters(), *self.d_b.parameters()], lr=config.d_lr, betas=betas)
        common = dict(device=ctx.device, batch_size=config.batch_size, drop_last=True, normalize="symmetric",
                      rank=ctx.rank, world_size=ctx.world_size)
        self.data_a = DataBuffer(data.a.train_images[train_rows], None, seed=ctx.seed, **common)
        self.data_b = DataBuffer(data.b.train_images, None, seed=ctx.seed + 1, **common)
        pools = ctx.generator("image_pool")
        self.pool_a = ImagePool(config.pool_size, self.shape, ctx.device, pools)
        self.pool_b = ImagePool(config.pool_size, self.shape, ctx.device, pools)
        self.data, self.val_rows = data, val_rows
        self.labelled = data.a.train_labels is not None and data.b.train_labels is not None
        self.measured = has_yardstick(data.b, config.classifier)
        self.quality: SampleQuality | None = None
        if self.measured and ctx.training:  # now, so config.yaml records the classifier's hash
            self.sample_quality()

    def networks(self) -> tuple[nn.Module, ...]:
        return self.g_ab, self.g_ba, self.d_a, self.d_b

    @property
    def steps_per_epoch(self) -> int:
        return max(len(self.data_a), len(self.data_b))

    # ------------------------------------------------------------------ training

    def set_learning_rates(self) -> float:
        horizon = self.ctx.total_steps
        decay = self.config.decay_fraction * horizon
        factor = linear(1.0, 0.0, decay, begin=horizon - decay)(self.global_step) if decay > 0 else 1.0
        for optimizer, lr in ((self.g_opt, self.config.g_lr), (self.d_opt, self.config.d_lr)):
            for group in optimizer.param_groups:
                group["lr"] = lr * factor
        return self.config.g_lr * factor

    def train_step(self) -> dict[str, float]:
        cfg = self.config
        lr = self.set_learning_rates()
        real_a, real_b = self.data_a.next().images, self.data_b.next().images

        # generators: fool both discriminators, come back by the cycle, leave the target domain alone
        fake_b, fake_a = self.g_ab(real_a), self.g_ba(real_b)
        for d in (self.d_a, self.d_b):
            d.requires_grad_(False)
        gan = lsgan(self.d_b(fake_b), True) + lsgan(self.d_a(fake_a), True)
        cycle = F.l1_loss(self.g_ba(fake_b), real_a) + F.l1_loss(self.g_ab(fake_a), real_b)
        identity = torch.zeros((), device=real_a.device)
        if cfg.lambda_identity > 0:
            identity = F.l1_loss(self.g_ab(real_b), real_b) + F.l1_loss(self.g_ba(real_a), real_a)
        g_loss = gan + cfg.lambda_cycle * cycle + cfg.lambda_cycle * cfg.lambda_identity * identity
        self.g_opt.zero_grad(set_to_none=True)
        g_loss.backward()
        self.g_opt.step()

        # discriminators: real -> 1, generated (partly from the pools) -> 0, halved as in the reference
        for d in (self.d_a, self.d_b):
            d.requires_grad_(True)
        old_b, old_a = self.pool_b.query(fake_b), self.pool_a.query(fake_a)
        d_loss = 0.5 * (lsgan(self.d_b(real_b), True) + lsgan(self.d_b(old_b), False)
                        + lsgan(self.d_a(real_a), True) + lsgan(self.d_a(old_a), False))
        self.d_opt.zero_grad(set_to_none=True)
        d_loss.backward()
        self.d_opt.step()

        self.global_step += 1
        return {"train/g_loss": g_loss.item(), "train/d_loss": d_loss.item(), "train/gan_loss": gan.item(),
                "train/cycle_loss": cycle.item(), "train/identity_loss": identity.item(), "train/lr": lr}

    # ------------------------------------------------------------------ translation and evaluation

    @torch.inference_mode()
    def translate(self, images: torch.Tensor, direction: str = "a2b") -> torch.Tensor:
        """uint8 (N, C, H, W) -> uint8 translated images (a2b or b2a), on the CPU."""
        if direction not in ("a2b", "b2a"):
            raise LabError(f"direction must be a2b or b2a, got '{direction}'")
        net = self.g_ab if direction == "a2b" else self.g_ba
        net.eval()
        out = []
        for batch in images.split(500):
            self.ctx.check_stop()  # a whole test split, several times an evaluation: a stop ends it within seconds
            out.append(to_uint8(net(batch.to(self.ctx.device).float() / 127.5 - 1), low=-1.0))
        net.train()
        return torch.cat(out) if out else images

    def sample_quality(self) -> SampleQuality:
        """Domain B's classifier (trained once and cached, or --classifier), checked against the
        run's record, and B's real features; at set-up when training, else at the first evaluation."""
        if self.quality is None:
            cfg = self.config
            self.quality = SampleQuality(self.data.b, self.ctx, None, cfg.classifier, cfg.classifier_sha256,
                                         measures="its translations' metrics")
            cfg.classifier_sha256 = self.quality.classifier_sha256
        return self.quality

    def preservation(self, translated: torch.Tensor, labels: torch.Tensor) -> float:
        """Fraction of translated A images that B's classifier reads as their own label."""
        judge = self.sample_quality().classifier
        with torch.inference_mode():
            logits = torch.cat([judge(batch.to(self.ctx.device))[1] for batch in translated.split(1000)])
        return (logits.argmax(1).cpu() == labels).float().mean().item()

    def evaluate(self) -> dict[str, float]:
        test_a, test_b = self.data.a.test_images, self.data.b.test_images
        a_in_b = self.translate(test_a)
        back_a = self.translate(a_in_b, "b2a")
        back_b = self.translate(self.translate(test_b, "b2a"))
        metrics = {"eval/cycle_l1_a": (back_a.float() - test_a.float()).abs().mean().item() / 127.5,
                   "eval/cycle_l1_b": (back_b.float() - test_b.float()).abs().mean().item() / 127.5}
        if self.measured and len(a_in_b) > NEIGHBOURS:
            metrics.update(self.sample_quality().metrics(a_in_b))
        if self.labelled:
            metrics["val/class_preservation"] = self.preservation(
                self.translate(self.data.a.train_images[self.val_rows]), self.data.a.train_labels[self.val_rows])
            metrics["eval/class_preservation"] = self.preservation(a_in_b, self.data.a.test_labels)
        return metrics

    def write_media(self, media_dir: Path) -> dict[str, Path]:
        """Rows of (source, translated, back again) for 8 test images of each domain."""
        step = f"step{self.global_step:09d}"
        media = {}
        for name, images, there, back in (("a2b2a", self.data.a.test_images[:8], "a2b", "b2a"),
                                          ("b2a2b", self.data.b.test_images[:8], "b2a", "a2b")):
            moved = self.translate(images, there)
            triples = torch.stack([images, moved, self.translate(moved, back)], 1).flatten(0, 1)
            media[f"media/{name}"] = save_grid(triples, self.ctx.media_path(f"{name}-{step}", ".png"), 6)
        return media

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        return {"nets": [net.state_dict() for net in self.networks()], "g_opt": self.g_opt.state_dict(),
                "d_opt": self.d_opt.state_dict(),
                "data": [self.data_a.state_dict(), self.data_b.state_dict()],
                "pools": [self.pool_a.state_dict(), self.pool_b.state_dict()]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for net, weights in zip(self.networks(), state["nets"], strict=True):
            net.load_state_dict(weights)
        self.g_opt.load_state_dict(state["g_opt"])
        self.d_opt.load_state_dict(state["d_opt"])
        self.data_a.load_state_dict(state["data"][0])
        self.data_b.load_state_dict(state["data"][1])
        self.pool_a.load_state_dict(state["pools"][0])
        self.pool_b.load_state_dict(state["pools"][1])


@hookimpl
def register_algorithms(register) -> None:
    register(CycleGAN)
