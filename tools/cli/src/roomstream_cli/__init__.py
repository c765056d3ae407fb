"""The roomstream command line."""
