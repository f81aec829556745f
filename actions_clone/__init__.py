"""The `clone` action type: its input, its pipeline steps and their helpers."""
