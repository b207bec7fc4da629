"""Tasks: one folder each (``classify/``, ``detect/``), found by ``xvhpc.registry.task_infos``.

A folder holds everything particular to its task. ``info.py`` (torch-free: the spec, sweeps and
status read it on the login side) defines ``INFO``, a ``TaskInfo``; ``task.py`` (compute side)
defines ``TASK``, what the task-blind pipeline calls (``base.Task``). Adding a task is adding a
folder: nothing outside ``tasks/`` names one.
"""
