"""Compute-node steps: thin entry points called by the job scripts."""
