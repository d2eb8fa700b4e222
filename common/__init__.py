"""Framework internals shared by the orchestrator and the source modules."""
