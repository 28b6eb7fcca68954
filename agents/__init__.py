"""Multi-task RL agents: Distral and the A2C baselines."""
