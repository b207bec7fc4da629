"""The rendezvous port of a job: one formula for every scheduler and launcher environment.

Below Linux's ephemeral range (32768-60999, net.ipv4.ip_local_port_range), where an outgoing
connection of any process on the node may already hold a port (issue 22 N16), and spread by the
job id so two jobs sharing a node rarely meet. Packed sweep points add their slot (at most
``SLOTS``) to the job's port. Torch-free: the job scripts and the ranks both use it.
"""

from __future__ import annotations

BASE = 15000
SPAN = 12000  # job ports 15000-26999
SLOTS = 5000  # packed points (Summit: a slot per node at most): + 1 + slot, below 32768


def master_port(job_id: int) -> int:
    """The job's rendezvous port, as the job script computes it."""
    return BASE + job_id % SPAN


def master_port_shell(job_id_expression: str) -> str:
    """The same formula in the job script (``job_id_expression``: e.g. ``SLURM_JOB_ID``)."""
    return f"$(({BASE} + {job_id_expression} % {SPAN}))"
