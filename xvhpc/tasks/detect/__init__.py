"""Object detection (``task: detect``): boxes through the same ingest, train, evaluate and serve."""
