"""Container runtimes (Apptainer, Charliecloud, podman-hpc, pyxis) around a rank's command."""
