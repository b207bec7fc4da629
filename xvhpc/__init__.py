"""xvhpc: Visual-Insights-style image classification pipelines for HPC clusters.

The login-node side (``spec``, ``plan``, ``schedulers``, ``launchers``, ``submit``) never
imports torch; the compute-node side (``data``, ``models``, ``runtime``, ``steps``, ``serve``)
does the work inside jobs.
"""

__version__ = "0.1.0"
