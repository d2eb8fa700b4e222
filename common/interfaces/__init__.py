"""Plugin-facing interfaces."""
