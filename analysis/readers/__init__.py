"""Readers that turn training logs of many formats into :class:`satmon.Run` objects."""
