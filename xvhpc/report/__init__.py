"""The report's task-neutral building blocks (torch-free): HTML tables, figures with their
intervals, embedded PNGs. Each task's report section and the report driver use them."""
