"""Batch evaluation: per-clip journal, output writers, the resumable evaluation loop."""
