"""roomstream monitor service."""
