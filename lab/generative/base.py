"""The base class every generator subclasses (`gan`, `vae`, `cyclegan`, third-party ones).

A generator plugin subclasses `ImageGenerator`, implements `sample(n)` (and `translate` for
image-to-image models) and its learning step; `lab.generative.images` turns samples into
PNG grids and folders, and `lab.generative.quality` measures them against the real images
(Frechet and kernel distances, precision/recall, in a reference classifier's features).
"""

from __future__ import annotations

import torch

from lab.api import Algorithm, ImageDataset, LabError, UnpairedImageDataset, split_validation


class ImageGenerator(Algorithm):
    """A model that makes images. `sample(n)` returns uint8 (n, C, H, W) on the CPU."""

    kind = "generator"
    media_each_evaluation = True  # a sample grid every epoch shows training progress

    def sample(self, n: int) -> torch.Tensor:
        """`n` new images, uint8 (n, C, H, W) on the CPU (`lab sample`, `lab.load(run).sample(n)`).

        Image-to-image models (cyclegan) do not sample: they implement `translate`.
        """
        raise LabError(f"{self.name} translates images rather than sampling them; use `lab sample RUN --input DIR`")

    def translate(self, images: torch.Tensor, direction: str = "a2b") -> torch.Tensor:
        """uint8 (N, C, H, W) images of one domain -> the same images rendered in the other."""
        raise LabError(f"{self.name} samples images rather than translating them; use `lab sample RUN --n N`")

    shape: tuple[int, int, int]  # (C, H, W) of the images it makes, set from its data

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the images it makes."""
        return self.shape

    @property
    def steps_per_epoch(self) -> int:
        """Batches in one pass over `self.train_data` (a `DataBuffer` the subclass makes), so
        `--epochs` works."""
        return len(self.train_data)

    def load_images(self, unpaired: bool = False) -> ImageDataset | UnpairedImageDataset:
        """The run's dataset, resized by --image-size, of the kind this model learns from."""
        size = self.config.image_size
        data = self.ctx.load_dataset(**({} if size is None else {"image_size": size}))
        if unpaired and not isinstance(data, UnpairedImageDataset):
            raise LabError(f"{self.name} needs two unpaired domains: a folder with trainA/ trainB/ testA/ testB/ "
                           f"(--data image-folder:PATH) or mnist-styles; {self.ctx.data} is one image set")
        if not unpaired and not isinstance(data, ImageDataset):
            raise LabError(f"{self.name} learns one image distribution; {self.ctx.data} has two domains "
                           "(that is cyclegan's data)")
        return data

    def validation_rows(self, data: ImageDataset, called: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(training rows, held-out rows) of `data`'s training split; best.pt is chosen on the held-out ones."""
        size = self.config.validation_size
        if size >= len(data.train_images):
            raise LabError(f"--validation-size {size} must be smaller than the {len(data.train_images)} "
                           f"training images of {called or data.name}")
        return split_validation(len(data.train_images), size)
