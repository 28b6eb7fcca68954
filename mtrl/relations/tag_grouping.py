"""TAG task grouping (Fifty et al. 2021, "Efficiently Identifying Task Groupings for Multi-Task
Learning", Sec. 3.2): score a group by the inter-task affinity onto each member from the rest,
then pick a partition (or TAG's overlapping network selection) maximising the total, with the
searches of :mod:`mtrl.relations.grouping`.
"""

from __future__ import annotations

import math

from torch import Tensor

from mtrl.relations.grouping import Group, _greedy_partition, _mask, _members, best_partition


def affinity_onto(affinity: Tensor, group: Group) -> dict[int, float]:
    """Per-task TAG score in ``group``: mean over i in group, i != j, of affinity[i, j] (0 alone).

    ``affinity (T, T)`` holds Z[i, j] = affinity of source i onto target j (Fifty et al. 2021).
    """
    return _onto(_host(affinity), group)


def _host(affinity: Tensor) -> list[list[float]]:
    """``affinity`` as plain floats: one copy to the host, which the searches then reuse (per
    group it was one device sync each, 2^T - 1 of them for an exact search on CUDA)."""
    return affinity.detach().double().cpu().tolist()


def _onto(z: list[list[float]], group: Group) -> dict[int, float]:
    """:func:`affinity_onto` on the host copy ``z`` of the affinity."""
    out = {}
    for j in group:
        others = [i for i in group if i != j]
        out[j] = sum(z[i][j] for i in others) / len(others) if others else 0.0
    return out


def tag_groups(
    affinity: Tensor, num_groups: int, overlapping: bool = False, exact_limit: int = 10
) -> list[Group]:
    """Group tasks by TAG inter-task affinity ``(T, T)`` (Fifty et al. 2021, Sec. 3.2).

    Each task j in group g scores the mean affinity onto it from g's other members (0 when alone);
    the grouping maximises the total. ``overlapping=False``: a partition into exactly ``num_groups``
    groups. ``overlapping=True`` (TAG's network selection): at most ``num_groups`` possibly
    overlapping groups covering all tasks, each task scored by its best group. Both are exact for
    T <= ``exact_limit`` (O(3^T) dynamic programmes) and greedy beyond.
    """
    t = affinity.shape[0]
    if affinity.dim() != 2 or affinity.shape != (t, t):
        raise ValueError(f"affinity must be square (T, T); got {tuple(affinity.shape)}")
    finite = affinity.detach().isfinite()
    if not bool(finite.all()):
        i, j = (int(v) for v in (~finite).nonzero()[0])
        raise ValueError(
            f"affinity must be finite; affinity[{i}, {j}] = {float(affinity[i, j])} (a task whose "
            "loss was 0 has no TAG affinity onto it)"
        )
    z = _host(affinity)
    if not overlapping:
        return best_partition(lambda g: sum(_onto(z, g).values()), t, num_groups, exact_limit)
    if not 1 <= num_groups <= t:
        raise ValueError(f"num_groups={num_groups!r} must lie in [1, {t}]")
    if t <= exact_limit:
        return _tag_cover(z, t, num_groups)
    return _greedy_tag_cover(z, t, num_groups)


def _greedy_tag_cover(z: list[list[float]], num_tasks: int, num_groups: int) -> list[Group]:
    """TAG network selection beyond the exact limit: the greedy partition into ``num_groups``
    groups (already a cover), then tasks added to further groups while that raises the cover's
    score (each task scored by its best group), until no single addition does."""
    groups = [
        set(g)
        for g in _greedy_partition(lambda g: sum(_onto(z, g).values()), num_tasks, num_groups)
    ]

    def value() -> float:
        best: dict[int, float] = {}
        for g in groups:
            for j, v in _onto(z, frozenset(g)).items():
                best[j] = max(best.get(j, -math.inf), v)
        return sum(best.values())

    current, improved = value(), True
    while improved:  # the score rises strictly with every kept addition: this ends
        improved = False
        for g in groups:
            for j in range(num_tasks):
                if j in g:
                    continue
                g.add(j)
                v = value()
                if v > current + 1e-12:
                    current, improved = v, True
                else:
                    g.discard(j)
    return sorted((frozenset(g) for g in groups), key=sorted)


def _tag_cover(z: list[list[float]], num_tasks: int, num_groups: int) -> list[Group]:
    """Exact TAG network selection: at most ``num_groups`` groups, each task scored by its best.

    Each task is *served* by one chosen group, so the chosen groups induce a partition of the tasks
    into served sets S. A served set's best score is served(S) = max over groups G containing S of
    sum_{j in S} affinity_onto(G)[j], and the optimum is the best partition into ``num_groups``
    blocks under that score (splitting a block never lowers it, so "at most" equals "exactly"),
    each block then served by its maximising group: O(3^T) for the scores plus the partition DP.
    """
    full = (1 << num_tasks) - 1
    served: list[tuple[float, int]] = [(-math.inf, 0)] * (full + 1)
    # Smaller, then lexicographically first, groups first: ties keep the smallest serving group.
    for g in sorted(range(1, full + 1), key=lambda m: (m.bit_count(), _members(m))):
        onto = _onto(z, frozenset(_members(g)))
        sub = g
        while sub:
            score = sum(onto[j] for j in _members(sub))
            if score > served[sub][0] + 1e-12:
                served[sub] = (score, g)
            sub = (sub - 1) & g
    blocks = best_partition(
        lambda group: served[_mask(group)][0], num_tasks, num_groups, exact_limit=num_tasks
    )
    chosen = {served[_mask(b)][1] for b in blocks}
    return sorted((frozenset(_members(m)) for m in chosen), key=sorted)
