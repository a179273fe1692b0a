"""A sum tree held in one device tensor, for proportional prioritized replay.

Every operation is a fixed number of batched tensor ops (one per tree level), so sampling
and priority updates run on the GPU without a host round-trip. float64 keeps the root sum
exact enough for a million leaves with priorities spanning many orders of magnitude.
"""

from __future__ import annotations

import torch


class SumTree:
    """Leaves `0..size-1` hold non-negative weights; internal node i = node 2i + node 2i+1."""

    def __init__(self, size: int, device: torch.device) -> None:
        self.size = size
        self.num_leaves = 1 << max(0, (size - 1).bit_length())
        self.depth = self.num_leaves.bit_length() - 1
        self.tree = torch.zeros(2 * self.num_leaves, dtype=torch.float64, device=device)

    @property
    def total(self) -> torch.Tensor:
        """Sum of all leaves (a 0-d device tensor)."""
        return self.tree[1]

    @property
    def leaves(self) -> torch.Tensor:
        """A view of the `size` leaf weights."""
        return self.tree[self.num_leaves : self.num_leaves + self.size]

    def get(self, index: torch.Tensor) -> torch.Tensor:
        return self.tree[index + self.num_leaves]

    def set(self, index: torch.Tensor, value: torch.Tensor) -> None:
        """Set leaves `index` to `value` and refresh their ancestors, one level at a time."""
        node = index.long() + self.num_leaves
        self.tree[node] = value.to(torch.float64)
        for _ in range(self.depth):
            node = node >> 1
            self.tree[node] = self.tree[2 * node] + self.tree[2 * node + 1]

    def load_leaves(self, leaves: torch.Tensor) -> None:
        """Replace every leaf and rebuild all internal nodes (used when loading a checkpoint)."""
        self.tree.zero_()
        self.leaves.copy_(leaves)
        width = self.num_leaves
        while width > 1:
            level = self.tree[width : 2 * width].view(-1, 2).sum(dim=1)
            self.tree[width // 2 : width].copy_(level)
            width //= 2

    def find(self, mass: torch.Tensor) -> torch.Tensor:
        """For each value in [0, total), the leaf whose cumulative-weight interval holds it.

        The descent only enters children with positive weight, so float rounding at an
        interval edge can never land on an empty leaf.
        """
        node = torch.ones_like(mass, dtype=torch.long)
        mass = mass.to(torch.float64)
        for _ in range(self.depth):
            left = 2 * node
            left_mass = self.tree[left]
            go_right = ((mass >= left_mass) & (self.tree[left + 1] > 0)) | (left_mass <= 0)
            mass = torch.where(go_right, mass - left_mass, mass)
            node = left + go_right.long()
        return node - self.num_leaves
