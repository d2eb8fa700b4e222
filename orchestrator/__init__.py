"""Running batches: the CLI, the job executor, live statistics and reports."""
