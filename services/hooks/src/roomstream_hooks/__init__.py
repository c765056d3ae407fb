"""roomstream webhooks service."""
