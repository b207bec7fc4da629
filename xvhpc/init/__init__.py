"""``xvhpc init``: a data folder, CSV or COCO file → a summary and a commented spec that
validates (login side: torch-free; the task's catalog lists the data as ingest will)."""
