"""The progress bar's per-task postfix: full names when they fit, unambiguous cuts when not."""

from collections import deque

from agents.progress import task_postfix

NAMES = ["pong", "space_invaders", "space_war", "breakout"]
RECENT = [deque([1.0, 2.0]), deque([10.0]), deque(), deque([-3.0, -4.0, -5.0])]


def test_full_names_when_they_fit():
    text = task_postfix(NAMES, RECENT, width=200)
    assert text == "pong=1.50 space_invaders=10.00 space_war=- breakout=-4.00"


def test_names_cut_to_fit_but_never_to_a_collision():
    # 8 characters make 50 (one too many), 7 make 47
    text = task_postfix(NAMES, RECENT, width=49)
    assert text == "pong=1.50 space_i=10.00 space_w=- breakou=-4.00"


def test_names_never_below_four_characters():
    # "spac" would name two tasks: those stay whole
    text = task_postfix(NAMES, RECENT, width=10)
    assert text == "pong=1.50 space_invaders=10.00 space_war=- brea=-4.00"
