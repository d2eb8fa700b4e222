"""The built-in source modules (s3, ftp, web, api), registered under ``module_system.modules``."""
