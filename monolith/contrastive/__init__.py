"""Contrastive pre-training: augmentations, the NT-Xent loss and the training loop."""

from monolith.contrastive.augment import augment, jitter, make_views, scaling, time_masking
from monolith.contrastive.loss import alignment, nt_xent_loss, uniformity

__all__ = [
    "alignment",
    "augment",
    "jitter",
    "make_views",
    "nt_xent_loss",
    "scaling",
    "time_masking",
    "uniformity",
]
