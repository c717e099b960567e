"""DHO integration service."""
