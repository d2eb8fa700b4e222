"""The ``s3`` source module: objects of an S3 (or S3-compatible) bucket under a prefix."""
