"""Clinical rules: pure functions from an observation and a plan to decisions."""
