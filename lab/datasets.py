"""Moved to `lab.api.datasets` (import from `lab.api`); this module stays so that plugins written
for arcade-lab 0.1 import unchanged."""

from lab.api.datasets import ImageDataset, UnpairedImageDataset, split_validation

__all__ = ["ImageDataset", "UnpairedImageDataset", "split_validation"]
