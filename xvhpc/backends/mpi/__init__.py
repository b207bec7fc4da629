"""Open MPI's mpirun launcher and the OMPI_*/PMI job environment."""
