"""slimserve: make ML models fit serverless platforms."""
__version__ = "0.1.0"
