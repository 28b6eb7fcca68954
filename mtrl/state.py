"""Copies of module and optimiser state that share no tensor with the live ones, cheaper than
``copy.deepcopy``: what a step that may be undone (:class:`mtrl.trainer.Trainer`, the RL runner)
and a weighting's internal optimiser (checkpointed as extra state) keep."""

from __future__ import annotations

import copy
from collections import OrderedDict
from typing import Any

from torch import Tensor, nn


def state_snapshot(module: nn.Module) -> dict[str, Any]:
    """``module.state_dict()``, copied to be loaded back later: what ``copy.deepcopy`` of it
    gives for that purpose, at a fifth to a third of its cost (the Trainer takes one every step).
    Plain tensors are cloned (``Tensor.__deepcopy__`` costs several clones), dicts, lists and
    tuples rebuilt, anything else deep-copied; a tensor seen twice is cloned once, as deepcopy's
    memo does. The ``_metadata`` (module versions) is built afresh by each ``state_dict()`` call
    and only read by ``load_state_dict``: it is kept as it is."""
    state = module.state_dict()
    out = copy_state(state, {})
    if hasattr(state, "_metadata"):
        out._metadata = state._metadata
    return out


def copy_state(obj: Any, memo: dict[int, Any] | None = None) -> Any:
    """A copy of a state (nested dicts, lists and tuples of tensors and plain values) that shares
    no tensor with it: tensors cloned, containers rebuilt, anything else deep-copied."""
    memo = {} if memo is None else memo
    if type(obj) is Tensor and not obj.requires_grad:
        if id(obj) not in memo:
            memo[id(obj)] = obj.clone()
        return memo[id(obj)]
    if type(obj) in (dict, OrderedDict):
        return type(obj)((k, copy_state(v, memo)) for k, v in obj.items())
    if type(obj) in (list, tuple):
        return type(obj)(copy_state(v, memo) for v in obj)
    return copy.deepcopy(obj, memo)
