"""Detection quality: NAB's benchmark and the simulator's ground truth, scored the same way each run.

`python -m detection_eval nab|simulator|all` (see README.md in this folder). The NAB part
re-implements NAB's scorer exactly, so numbers compare with NAB's published leaderboard; the
simulator part replays scripted faults through the pipeline's own detector and episode logic.
"""
