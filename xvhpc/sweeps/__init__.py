"""Adaptive sweeps (Optuna studies in a journal file under RUN_DIR) and per-point tracking.

``study`` is torch-free (compile, status, evaluate and report read it); ``tracker`` is what
training calls (TensorBoard, intermediate values and pruning, early stopping); ``board`` adds
trial states to the leaderboard and plots metric against each parameter.
"""
