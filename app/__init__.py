"""falrelay: a durable jobs API in front of fal.ai's queue."""

__version__ = "0.1.0"
