"""roomstream gateway service."""
