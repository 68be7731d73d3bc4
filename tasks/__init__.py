"""Thin, retryable Prefect tasks over the vaultflow core."""

from tasks.run_actor import prefect_run_actor
from vaultflow.audit import attribute_runs_with

attribute_runs_with(prefect_run_actor)
