"""Owned outputs: every file a job made, copied from fal to the operator's store."""
