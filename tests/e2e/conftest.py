"""The end-to-end tests' fixtures are tests/conftest.py's session fixtures (an ingested run,
files to predict and their local predictions), built once for the unit and e2e tests alike."""
