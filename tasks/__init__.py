"""Thin, retryable Prefect tasks over the vaultflow core."""
