"""Slurm: sbatch/squeue/scancel, the srun launcher and the SLURM_* job environment."""
