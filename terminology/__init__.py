"""terminology."""
