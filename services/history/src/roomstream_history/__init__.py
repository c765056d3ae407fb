"""roomstream history service."""
