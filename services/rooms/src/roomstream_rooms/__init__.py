"""roomstream rooms service."""
