"""Online change detectors sharing one protocol: ``update(value, step) -> Event | None``."""
