"""Vectorised multi-task environment suites: Atari (ale-py), MinAtar and gridworld."""
