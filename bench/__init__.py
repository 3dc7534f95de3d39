"""Load benchmark for earpiece: load generator, fake provider, runner, baselines (see README.md)."""
