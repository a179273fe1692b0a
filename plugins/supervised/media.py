"""Pictures of a classifier's mistakes: a confusion matrix and a grid of misclassified images.

Uses matplotlib's object API (`Figure` + Agg canvas), so nothing touches a display or the
global pyplot state; matplotlib loads when a picture is drawn, not with the plugin (every `lab`
process loads the plugins: an import of about 0.4 s saved there).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from lab.files import writing

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def confusion_matrix(targets: torch.Tensor, predictions: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(true, predicted) counts as an int64 (num_classes, num_classes) tensor."""
    flat = targets.long() * num_classes + predictions.long()
    return torch.bincount(flat.cpu(), minlength=num_classes * num_classes).view(num_classes, num_classes)


def _save(fig: Figure, path: Path) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    with writing(path, "write image", "move the run folder where there is room"):
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=100, bbox_inches="tight")
    return path


def plot_confusion_matrix(matrix: torch.Tensor, classes: Sequence[str], path: Path) -> Path:
    n = matrix.shape[0]
    size = max(4.0, 0.45 * n + 2)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(size, size))
    ax = fig.add_subplot()
    ax.imshow(matrix.numpy(), cmap="Blues")
    ax.set_xticks(range(n), classes, rotation=90 if n > 10 else 0)
    ax.set_yticks(range(n), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    accuracy = matrix.diag().sum().item() / max(1, matrix.sum().item())
    ax.set_title(f"confusion matrix (accuracy {accuracy:.2%})")
    if n <= 20:
        threshold = matrix.max().item() / 2
        cells = torch.cartesian_prod(torch.arange(n), torch.arange(n)).tolist()
        for (i, j), count in zip(cells, matrix.flatten().tolist(), strict=True):
            ax.text(j, i, str(count), ha="center", va="center", fontsize=7, color="white" if count > threshold else "black")
    return _save(fig, path)


def plot_misclassified(
    images: torch.Tensor, targets: torch.Tensor, predictions: torch.Tensor, classes: Sequence[str], path: Path
) -> Path:
    """Up to len(images) examples titled 'true -> predicted'; uint8 (N, C, H, W) images."""
    count = len(images)
    cols = max(1, min(8, count))
    rows = max(1, math.ceil(count / cols))
    from matplotlib.figure import Figure

    fig = Figure(figsize=(1.3 * cols, 1.5 * rows))
    for k in range(rows * cols):
        ax = fig.add_subplot(rows, cols, k + 1)
        ax.axis("off")
        if k >= count:
            continue
        image = images[k].permute(1, 2, 0).cpu().numpy()
        ax.imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap="gray", vmin=0, vmax=255)
        ax.set_title(f"{classes[int(targets[k])]} -> {classes[int(predictions[k])]}", fontsize=8)
    if count == 0:
        fig.suptitle("no misclassified test images")
    return _save(fig, path)
