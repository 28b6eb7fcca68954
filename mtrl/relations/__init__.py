"""Task relationships: inter-task affinity (TAG lookahead, gradient cosine), grouping search
(TAG, Standley et al. 2020) and transfer matrices (Taskonomy-style, RL time-to-threshold / AUC)."""

from mtrl.relations.affinity import AffinityTracker, gradient_cosine, lookahead_affinity
from mtrl.relations.grouping import best_cover, best_grouping, best_partition, standley_cover
from mtrl.relations.tag_grouping import affinity_onto, tag_groups
from mtrl.relations.transfer import (
    area_under_curve,
    plot_transfer_matrix,
    steps_to_threshold,
    transfer_matrix,
)

__all__ = [
    "AffinityTracker",
    "affinity_onto",
    "area_under_curve",
    "best_cover",
    "best_grouping",
    "best_partition",
    "gradient_cosine",
    "lookahead_affinity",
    "plot_transfer_matrix",
    "standley_cover",
    "steps_to_threshold",
    "tag_groups",
    "transfer_matrix",
]
