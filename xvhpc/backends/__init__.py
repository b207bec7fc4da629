"""Schedulers, launchers and job environments: one folder per backend (see ``base.py``).

Kept empty: a training rank imports ``backends/<name>/environment.py`` through this package,
and must not pull in the login side.
"""
