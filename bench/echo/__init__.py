"""Baseline servers measured side by side with Emergence."""
