"""This machine: no queue (xvhpc runs the scripts), no launcher, one process."""
