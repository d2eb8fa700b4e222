"""Built-in destinations (``module_system.destinations`` entry points): s3, local, sql."""
