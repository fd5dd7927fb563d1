"""Trainer adapters (``satmon.callbacks``): thin translations of trainer events to the core."""
