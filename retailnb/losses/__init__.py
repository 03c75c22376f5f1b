"""Losses for representation learning that lightly does not ship (lightly's own are used directly)."""

from retailnb.losses.supcon import SupConLoss

__all__ = ["SupConLoss"]
