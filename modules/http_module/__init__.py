"""The ``http`` source module: files behind plain HTTP(S) URLs or index pages."""
