"""Task grouping search: which tasks to train together.

Two formulations: TAG (Fifty et al. 2021; its scores in :mod:`mtrl.relations.tag_grouping`)
partitions tasks into groups maximising the affinity onto each task from the rest of its group;
Standley et al. 2020 ("Which Tasks Should Be Learned Together
in Multi-task Learning?") picks possibly overlapping groups covering every task under a compute
budget, minimising the sum over tasks of the best loss any chosen group achieves on it. Both are
solved exactly for small T (set-partition DPs; exhaustive search or branch and bound for covers)
with a greedy fallback.
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from functools import cache

from torch import Tensor

Group = frozenset[int]


def _members(mask: int) -> list[int]:
    return [i for i in range(mask.bit_length()) if mask >> i & 1]


def _mask(group: Group) -> int:
    return sum(1 << i for i in group)


def best_partition(
    subset_score: Callable[[Group], float], num_tasks: int, num_groups: int, exact_limit: int = 10
) -> list[Group]:
    """Partition ``range(num_tasks)`` into exactly ``num_groups`` groups maximising the summed
    ``subset_score(group)``.

    Exact dynamic programme over bitmasks (O(3^T k)) for T <= ``exact_limit``; beyond that a greedy
    agglomerative search (start from singletons, repeatedly merge the pair with the largest gain).
    """
    if not 1 <= num_groups <= num_tasks:
        raise ValueError(f"num_groups={num_groups!r} must lie in [1, {num_tasks}]")
    subset_score = _checked(subset_score)
    if num_tasks > exact_limit:
        return _greedy_partition(subset_score, num_tasks, num_groups)
    full = (1 << num_tasks) - 1
    score = [0.0] + [subset_score(frozenset(_members(m))) for m in range(1, full + 1)]

    @cache
    def solve(mask: int, k: int) -> tuple[float, tuple[int, ...]]:
        if mask == 0:
            return (0.0, ()) if k == 0 else (-math.inf, ())
        if k == 0 or mask.bit_count() < k:
            return -math.inf, ()
        low = mask & -mask
        best: tuple[float, tuple[int, ...]] = (-math.inf, ())
        sub = mask
        while sub:
            if sub & low:
                rest, groups = solve(mask ^ sub, k - 1)
                value = score[sub] + rest
                if value > best[0]:
                    best = (value, (sub, *groups))
            sub = (sub - 1) & mask
        return best

    value, masks = solve(full, num_groups)
    solve.cache_clear()
    if value == -math.inf:  # every partition scores -inf: there is no best one to return
        raise ValueError(
            f"no partition of {num_tasks} tasks into {num_groups} groups has a score above -inf"
        )
    return sorted((frozenset(_members(m)) for m in masks), key=sorted)


def _checked(subset_score: Callable[[Group], float]) -> Callable[[Group], float]:
    """``subset_score`` raising a ``ValueError`` on NaN: every comparison with NaN is false, so
    the searches would otherwise return an empty or arbitrary grouping."""

    def score(group: Group) -> float:
        value = float(subset_score(group))
        if math.isnan(value):
            raise ValueError(f"subset_score is NaN for group {sorted(group)}")
        return value

    return score


def _greedy_partition(
    subset_score: Callable[[Group], float], num_tasks: int, num_groups: int
) -> list[Group]:
    groups = [frozenset([t]) for t in range(num_tasks)]
    while len(groups) > num_groups:
        best = None
        for a, b in itertools.combinations(range(len(groups)), 2):
            gain = (
                subset_score(groups[a] | groups[b])
                - subset_score(groups[a])
                - subset_score(groups[b])
            )
            if best is None or gain > best[0]:
                best = (gain, a, b)
        assert best is not None
        _, a, b = best
        merged = groups[a] | groups[b]
        groups = [g for i, g in enumerate(groups) if i not in (a, b)] + [merged]
    return sorted(groups, key=sorted)


def _per_task_values(
    group: Group, values: Mapping[int, float] | Sequence[float]
) -> dict[int, float]:
    if isinstance(values, Mapping):
        out = {int(t): float(v) for t, v in values.items()}
    else:
        flat = values.tolist() if isinstance(values, Tensor) else list(values)
        if len(flat) != len(group):
            raise ValueError(f"group {sorted(group)} has {len(group)} tasks but {len(flat)} losses")
        out = {t: float(v) for t, v in zip(sorted(group), flat)}
    if set(out) != set(group):
        raise ValueError(f"losses for tasks {sorted(out)} do not match group {sorted(group)}")
    return out


def best_cover(
    candidates: Mapping[Group, Mapping[int, float]],
    budget: float,
    costs: Mapping[Group, float] | None = None,
    maximize: bool = False,
    exact_limit: int = 200_000,
    search_limit: int = 200_000,
) -> list[Group]:
    """Choose candidate groups covering every task with total cost <= ``budget`` that optimise
    sum_t best_{chosen g containing t} value_g[t] (min for losses, max for ``maximize``).

    ``candidates`` maps each group to its per-task values. Exhaustive over combinations when there
    are at most ``exact_limit`` of them (ties resolve to fewer, then lexicographically first,
    groups); otherwise an exact branch and bound seeded by a greedy cover, which visits at most
    ``search_limit`` nodes and falls back to the greedy cover (with a warning) beyond that.
    """
    groups = sorted(candidates, key=lambda g: (len(g), sorted(g)))
    tasks = sorted(set().union(*groups)) if groups else []
    cost = {g: 1.0 if costs is None else float(costs[g]) for g in groups}
    sign = -1.0 if maximize else 1.0  # internally minimise sign * value
    value = {g: {t: sign * float(v) for t, v in candidates[g].items()} for g in groups}
    for g in groups:
        nan = [t for t, v in value[g].items() if math.isnan(v)]
        if nan:
            raise ValueError(f"candidate group {sorted(g)} has NaN values for tasks {nan}")

    def objective(chosen: Sequence[Group]) -> float:
        total = 0.0
        for t in tasks:
            best = min((value[g][t] for g in chosen if t in g), default=math.inf)
            total += best
        return total

    affordable = [g for g in groups if cost[g] <= budget + 1e-12]
    min_cost = min(cost.values(), default=1.0)
    max_size = (
        min(len(affordable), int(budget / min_cost + 1e-9)) if min_cost > 0 else len(affordable)
    )
    n_combos = sum(math.comb(len(affordable), r) for r in range(1, max_size + 1))
    best: tuple[float, list[Group]] = (math.inf, [])
    if n_combos <= exact_limit:
        for r in range(1, max_size + 1):
            for combo in itertools.combinations(affordable, r):
                if sum(cost[g] for g in combo) > budget + 1e-12:
                    continue
                obj = objective(combo)
                if obj < best[0] - 1e-12:
                    best = (obj, list(combo))
    else:
        best = _greedy_cover(affordable, cost, budget, objective, tasks, value)
        try:
            best = _branch_and_bound(affordable, cost, budget, value, tasks, best, search_limit)
        except _SearchTooLarge:
            warnings.warn(
                f"best_cover: more than search_limit={search_limit} nodes; returning the greedy "
                "cover, which may not be optimal",
                stacklevel=2,
            )
    if not math.isfinite(best[0]):
        raise ValueError(
            f"no set of candidate groups within budget={budget!r} covers tasks {tasks}"
        )
    return sorted(best[1], key=sorted)


class _SearchTooLarge(Exception):
    pass


def _branch_and_bound(
    groups: list[Group],
    cost: dict[Group, float],
    budget: float,
    value: dict[Group, dict[int, float]],
    tasks: list[int],
    incumbent: tuple[float, list[Group]],
    node_limit: int,
) -> tuple[float, list[Group]]:
    """Exact minimum of the cover objective: depth-first over groups in a fixed order, pruning a
    branch when even adding every later group could not beat the best cover found so far."""
    # Groups that help most first, so good covers (and tight bounds) come early.
    order = sorted(groups, key=lambda g: (sum(value[g].values()) - len(g), sorted(g)))
    vals = [[value[g].get(t, math.inf) for t in tasks] for g in order]
    suffix = [[math.inf] * len(tasks)]  # suffix[k][j]: best value for task j among order[-k:]
    for row in reversed(vals):
        suffix.append([min(a, b) for a, b in zip(row, suffix[-1], strict=True)])
    suffix.reverse()  # now suffix[i] covers order[i:]
    best_obj, best_set = incumbent
    nodes = 0

    def search(start: int, current: list[float], spent: float, chosen: list[Group]) -> None:
        nonlocal best_obj, best_set, nodes
        for i in range(start, len(order)):
            if spent + cost[order[i]] > budget + 1e-12:
                continue
            nodes += 1
            if nodes > node_limit:
                raise _SearchTooLarge
            new = [min(a, b) for a, b in zip(current, vals[i], strict=True)]
            if sum(min(a, b) for a, b in zip(new, suffix[i + 1], strict=True)) >= best_obj - 1e-12:
                continue  # this group and any later ones cannot beat the incumbent
            chosen.append(order[i])
            obj = sum(new)
            if obj < best_obj - 1e-12:
                best_obj, best_set = obj, list(chosen)
            search(i + 1, new, spent + cost[order[i]], chosen)
            chosen.pop()

    search(0, [math.inf] * len(tasks), 0.0, [])
    return best_obj, best_set


def _greedy_cover(
    affordable: list[Group],
    cost: dict[Group, float],
    budget: float,
    objective: Callable[[Sequence[Group]], float],
    tasks: list[int],
    value: dict[Group, dict[int, float]],
) -> tuple[float, list[Group]]:
    # Uncovered tasks are charged their worst candidate value plus a margin so covering always helps.
    worst = {t: max(v[t] for v in value.values() if t in v) for t in tasks}

    def penalised(chosen: Sequence[Group]) -> float:
        total = 0.0
        for t in tasks:
            vals = [value[g][t] for g in chosen if t in g]
            total += min(vals) if vals else abs(worst[t]) * 2 + 1e6
        return total

    chosen: list[Group] = []
    spent = 0.0
    current = penalised(chosen)
    while True:
        best = None
        for g in affordable:
            if g in chosen or spent + cost[g] > budget + 1e-12:
                continue
            gain = (current - penalised([*chosen, g])) / max(cost[g], 1e-12)
            if gain > 1e-12 and (best is None or gain > best[0]):
                best = (gain, g)
        if best is None:
            break
        chosen.append(best[1])
        spent += cost[best[1]]
        current = penalised(chosen)
    return objective(chosen), chosen


def standley_cover(
    subset_losses: Mapping[Group, Mapping[int, float] | Sequence[float]],
    budget: float,
    costs: Mapping[Group, float] | None = None,
    exact_limit: int = 200_000,
) -> list[Group]:
    """Standley et al. 2020 network selection: groups covering all tasks within ``budget``.

    Args:
        subset_losses: for each trained group (frozenset of task ids), its per-task losses, as a
            mapping task -> loss or a sequence aligned with ``sorted(group)``. Lower is better.
        budget: total inference cost allowed (each group costs 1 unless ``costs`` says otherwise,
            so the default budget is the number of networks).
        costs: optional per-group cost (e.g. 0.5 for a half-width network).
    Returns the chosen groups; each task is served by its lowest-loss chosen group.
    """
    candidates = {frozenset(g): _per_task_values(frozenset(g), v) for g, v in subset_losses.items()}
    return best_cover(candidates, budget, costs, maximize=False, exact_limit=exact_limit)


def best_grouping(
    scores: Tensor
    | Mapping[Group, Mapping[int, float] | Sequence[float]]
    | Callable[[Group], float],
    num_groups: int,
    num_tasks: int | None = None,
) -> list[Group]:
    """Dispatch: ``(T, T)`` affinity -> :func:`tag_groups`; mapping of subset losses ->
    :func:`standley_cover` with budget ``num_groups``; a callable ``group -> score`` (higher is
    better) -> :func:`best_partition` over ``num_tasks`` tasks into ``num_groups`` groups."""
    if isinstance(scores, Tensor):
        from mtrl.relations.tag_grouping import tag_groups  # it builds on this module

        return tag_groups(scores, num_groups)
    if isinstance(scores, Mapping):
        return standley_cover(scores, float(num_groups))
    if num_tasks is None:
        raise ValueError("num_tasks is required when scores is a callable")
    return best_partition(scores, num_tasks, num_groups)
