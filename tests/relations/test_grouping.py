"""Task grouping: TAG partitions / network selection and Standley et al. 2020 covers."""

import itertools

import pytest
import torch

from mtrl.relations import best_grouping, standley_cover, tag_groups
from mtrl.relations.grouping import best_cover

F = frozenset


def block_affinity(blocks, t):
    z = -torch.ones(t, t)
    for block in blocks:
        for i in block:
            for j in block:
                z[i, j] = 1.0
    return z


@pytest.mark.parametrize("exact_limit", [10, 0])  # exact DP and greedy fallback
def test_tag_partition_recovers_blocks(exact_limit):
    z = block_affinity([[0, 3], [1, 2, 5], [4]], 6)
    groups = tag_groups(z, 3, exact_limit=exact_limit)
    assert groups == [F({0, 3}), F({1, 2, 5}), F({4})]
    assert tag_groups(block_affinity([[0, 1], [2, 3]], 4), 2) == [F({0, 1}), F({2, 3})]


def test_tag_single_group_and_validation():
    assert tag_groups(torch.zeros(3, 3), 1) == [F({0, 1, 2})]
    with pytest.raises(ValueError, match="num_groups=4"):
        tag_groups(torch.zeros(3, 3), 4)


def test_tag_overlapping_network_selection():
    # Task 2 helps and is helped by 0 and 1, but 0 and 1 hurt each other.
    z = torch.tensor([[0.0, -1.0, 1.0], [-1.0, 0.0, 1.0], [1.0, 1.0, 0.0]])
    assert tag_groups(z, 2, overlapping=True) == [F({0, 2}), F({1, 2})]
    assert tag_groups(z, 2) == [F({0}), F({1, 2})] or tag_groups(z, 2) == [F({0, 2}), F({1})]


@pytest.mark.parametrize(("t", "overlapping"), [(6, False), (6, True), (12, False), (12, True)])
def test_tag_searches_read_the_affinity_to_the_host_once(device_traffic, t, overlapping):
    # Every group scored used to copy the whole (T, T) affinity to the host: 2^T - 1 device
    # syncs for an exact search on CUDA (63 here; thousands for the greedy cover at T = 12).
    z = torch.randn(t, t, generator=torch.Generator().manual_seed(t))
    with device_traffic() as traffic:
        tag_groups(z, 3, overlapping=overlapping)  # T = 12: beyond the exact limit, greedy
    assert traffic.reads["cpu"] + traffic.reads["tolist"] <= 2  # the finite check aside


@pytest.mark.parametrize("k", [2, 5])
def test_tag_overlapping_beyond_the_exact_limit_covers_with_k_groups(k):
    # 11 tasks > exact_limit = 10: the greedy fallback used to offer only singletons and pairs,
    # so fewer than 6 groups could not cover the tasks and it raised.
    z = torch.randn(11, 11, generator=torch.Generator().manual_seed(k))
    got = tag_groups(z, k, overlapping=True)
    assert len(got) <= k and sorted(set().union(*got)) == list(range(11))
    score = sum(max(_tag_onto(z, g, j) for g in got if j in g) for j in range(11))
    partition = tag_groups(z, k)  # the greedy partition it starts from is a cover too
    assert score >= sum(_tag_onto(z, g, j) for g in partition for j in g) - 1e-9


def test_tag_overlapping_greedy_shares_a_hub_task():
    # Task 0 helps every other task; {1..5} and {6..10} help within themselves and hurt across.
    z = block_affinity([range(1, 6), range(6, 11)], 11)
    z[0, :] = 2.0
    z[:, 0] = -1.0
    got = tag_groups(z, 2, overlapping=True)  # greedy: 11 tasks
    assert got == [F({0, *range(1, 6)}), F({0, *range(6, 11)})]
    assert tag_groups(z, 2, overlapping=True, exact_limit=11) == got  # the exact answer


LOSSES = {
    F({0}): [1.0],
    F({1}): [1.0],
    F({2}): [1.0],
    F({0, 1}): [0.5, 0.5],
    F({0, 2}): [0.9, 1.5],
    F({1, 2}): {1: 1.2, 2: 0.9},
    F({0, 1, 2}): [0.8, 0.8, 0.8],
}


def test_standley_cover_by_hand():
    assert standley_cover(LOSSES, budget=1) == [F({0, 1, 2})]
    assert standley_cover(LOSSES, budget=2) == [F({0, 1}), F({0, 1, 2})]  # 0.5+0.5+0.8
    assert standley_cover(LOSSES, budget=3) == [F({0, 1}), F({0, 1, 2})]  # no further gain
    costs = {g: 2.0 if len(g) == 3 else 1.0 for g in LOSSES}
    # The triple now costs the whole budget; {0,1}+{1,2} gives 0.5+0.5+0.9 = 1.9 < 2.0 for {0,1}+{2}.
    assert standley_cover(LOSSES, budget=2, costs=costs) == [F({0, 1}), F({1, 2})]


def test_standley_greedy_fallback_is_valid_cover():
    groups = standley_cover(LOSSES, budget=2, exact_limit=0)
    assert set().union(*groups) == {0, 1, 2} and len(groups) <= 2


def test_cover_errors():
    with pytest.raises(ValueError, match="covers"):
        standley_cover({F({0}): [1.0], F({1}): [1.0]}, budget=1)
    with pytest.raises(ValueError, match="losses"):
        standley_cover({F({0, 1}): [1.0]}, budget=1)
    with pytest.raises(ValueError, match="do not match"):
        standley_cover({F({0, 1}): {0: 1.0, 2: 1.0}}, budget=1)


def test_best_cover_maximize():
    cands = {F({0}): {0: 1.0}, F({1}): {1: 1.0}, F({0, 1}): {0: 3.0, 1: -1.0}}
    assert best_cover(cands, budget=2, maximize=True) == [F({0, 1}), F({1})]


def test_best_grouping_dispatch():
    z = block_affinity([[0, 1], [2, 3]], 4)
    assert best_grouping(z, 2) == [F({0, 1}), F({2, 3})]
    assert best_grouping(LOSSES, 2) == [F({0, 1}), F({0, 1, 2})]
    # Callable: reward pairs {0,2} and {1,3}.
    score = lambda g: 1.0 if g in (F({0, 2}), F({1, 3})) else 0.0  # noqa: E731
    assert best_grouping(score, 2, num_tasks=4) == [F({0, 2}), F({1, 3})]
    with pytest.raises(ValueError, match="num_tasks"):
        best_grouping(score, 2)


def _all_partitions(items):
    if not items:
        yield []
        return
    first, rest = items[0], items[1:]
    for part in _all_partitions(rest):
        yield [[first], *part]
        for i in range(len(part)):
            yield [*part[:i], [first, *part[i]], *part[i + 1 :]]


def _tag_score(z, groups):
    total = 0.0
    for g in groups:
        for j in g:
            others = [i for i in g if i != j]
            total += sum(float(z[i, j]) for i in others) / len(others) if others else 0.0
    return total


@pytest.mark.parametrize("seed", range(4))
def test_tag_partition_matches_brute_force(seed):
    z = torch.randn(6, 6, generator=torch.Generator().manual_seed(seed))
    for k in (2, 3):
        best = max(
            (p for p in _all_partitions(list(range(6))) if len(p) == k),
            key=lambda p: _tag_score(z, p),
        )
        got = tag_groups(z, k)
        assert _tag_score(z, got) == pytest.approx(_tag_score(z, best))
        assert sorted(set().union(*got)) == list(range(6)) and len(got) == k


def test_tag_ten_tasks_is_fast_and_exact_on_blocks():
    blocks = [[0, 4, 7], [1, 2], [3, 5, 6, 8, 9]]
    got = tag_groups(block_affinity(blocks, 10), 3)
    assert got == sorted((F(b) for b in blocks), key=sorted)


def _best_cover_brute_force(z, k):
    """Max over every set of <= k groups covering all tasks of sum_j max_g affinity_onto(g)[j],
    vectorised over all combinations (independent of the library's search)."""
    t = z.shape[0]
    masks = torch.arange(1, 1 << t)
    member = (masks[:, None] >> torch.arange(t)) & 1 == 1  # (G, T)
    zd = z.double()
    sums = member.double() @ zd - torch.diagonal(zd) * member  # sum over i in g, i != j of z[i, j]
    count = member.sum(1, keepdim=True) - 1
    onto = torch.where(count > 0, sums / count.clamp(min=1), torch.zeros_like(sums))
    onto = torch.where(member, onto, torch.full_like(onto, -torch.inf))
    best = -torch.inf
    for r in range(1, k + 1):
        combos = torch.combinations(torch.arange(len(masks)), r)
        best = max(best, float(onto[combos].amax(1).sum(1).max()))
    return best


@pytest.mark.parametrize(("tasks", "k", "seed"), [(6, 4, 0), (6, 4, 1), (7, 3, 2), (5, 3, 3)])
def test_tag_overlapping_selection_matches_brute_force(tasks, k, seed):
    # Sizes where all subsets give more than 200,000 combinations of groups: the search must
    # still be exact (it used to fall back to a greedy cover there, 5-25% below the optimum).
    z = torch.randn(tasks, tasks, generator=torch.Generator().manual_seed(seed))
    got = tag_groups(z, k, overlapping=True)
    assert len(got) <= k and sorted(set().union(*got)) == list(range(tasks))
    score = sum(max(_tag_onto(z, g, j) for g in got if j in g) for j in range(tasks))
    assert score == pytest.approx(_best_cover_brute_force(z, k))


def _tag_onto(z, group, j):
    others = [i for i in group if i != j]
    return sum(float(z[i, j]) for i in others) / len(others) if others else 0.0


@pytest.mark.parametrize("seed", range(3))
def test_best_cover_branch_and_bound_equals_exhaustive(seed):
    g = torch.Generator().manual_seed(seed)
    groups = [F(c) for r in (1, 2, 3) for c in itertools.combinations(range(5), r)]
    cands = {grp: {t: float(torch.rand((), generator=g)) for t in grp} for grp in groups}
    costs = {grp: 0.5 + 0.25 * len(grp) for grp in groups}

    def objective(chosen):
        return sum(min(cands[c][t] for c in chosen if t in c) for t in range(5))

    exhaustive = best_cover(cands, budget=2.5, costs=costs)
    searched = best_cover(cands, budget=2.5, costs=costs, exact_limit=0)  # branch and bound
    assert sum(costs[c] for c in searched) <= 2.5 + 1e-9
    assert objective(searched) == pytest.approx(objective(exhaustive))


def test_best_cover_greedy_fallback_weighs_gain_by_cost():
    # search_limit=0: the branch and bound gives up at once and the greedy cover is returned.
    # Per unit of cost the two half-price singletons cover more than the pair: the greedy takes
    # them (objective 0.2), not the pair that covers both at once (0.6).
    cands = {F({0, 1}): {0: 0.3, 1: 0.3}, F({0}): {0: 0.1}, F({1}): {1: 0.1}}
    costs = {F({0, 1}): 1.0, F({0}): 0.5, F({1}): 0.5}
    with pytest.warns(UserWarning, match="greedy cover"):
        got = best_cover(cands, budget=1.0, costs=costs, exact_limit=0, search_limit=0)
    assert got == [F({0}), F({1})]


@pytest.mark.parametrize("overlapping", [False, True])
@pytest.mark.parametrize("exact_limit", [10, 2])
def test_tag_groups_refuses_a_non_finite_affinity(overlapping, exact_limit):
    # NaN failed every comparison in the search: the "best" partition came back empty
    z = block_affinity([[0, 1], [2]], 3)
    z[0, 1] = float("nan")
    with pytest.raises(ValueError, match=r"affinity\[0, 1\] = nan"):
        tag_groups(z, 2, overlapping=overlapping, exact_limit=exact_limit)


def test_best_partition_refuses_nan_scores_and_impossible_partitions():
    from mtrl.relations import best_partition

    with pytest.raises(ValueError, match=r"subset_score is NaN for group \[0\]"):
        best_partition(lambda g: float("nan"), 3, 2)
    with pytest.raises(ValueError, match="subset_score is NaN"):
        best_partition(lambda g: float("nan"), 3, 2, exact_limit=2)  # greedy path
    with pytest.raises(ValueError, match="no partition of 3 tasks into 1 groups"):
        best_partition(lambda g: 0.0 if len(g) == 1 else float("-inf"), 3, 1)  # was: []
    assert best_partition(lambda g: 0.0 if len(g) == 1 else float("-inf"), 3, 3) == [
        F({0}),
        F({1}),
        F({2}),
    ]


def test_best_cover_names_nan_losses():
    # was: "no set of candidate groups within budget=2.0 covers tasks [0, 1]"
    with pytest.raises(ValueError, match=r"candidate group \[0\] has NaN values for tasks \[0\]"):
        standley_cover({F({0}): [float("nan")], F({1}): [1.0]}, 2)


def test_tag_overlapping_ties_keep_the_smallest_serving_groups():
    # every grouping scores 0: the exact selection serves each block by itself (the smallest
    # group containing it, as documented), and the greedy one adds no task that gains nothing
    exact = tag_groups(torch.zeros(3, 3), 2, overlapping=True)
    assert len(exact) == 2 and sum(len(g) for g in exact) == 3  # two disjoint blocks
    greedy = tag_groups(torch.zeros(4, 4), 2, overlapping=True, exact_limit=2)
    assert greedy == [F({0, 1}), F({2, 3})]  # the greedy partition, nothing added


def test_tag_overlapping_is_exact_up_to_and_including_the_limit():
    z = torch.randn(4, 4, generator=torch.Generator().manual_seed(1))
    exact = tag_groups(z, 2, overlapping=True)
    assert tag_groups(z, 2, overlapping=True, exact_limit=4) == exact
    assert tag_groups(z, 2, overlapping=True, exact_limit=3) != exact  # greedy differs here
    # more groups than tasks: named as the problem on the greedy path too
    with pytest.raises(ValueError, match=r"num_groups=5 must lie in \[1, 4\]"):
        tag_groups(z, 5, overlapping=True, exact_limit=0)
