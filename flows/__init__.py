"""Prefect flows: what the UI, deployments and the CLI run.

Import each flow from its module (`from flows.backup import backup`); entry points for
deployments are `flows/backup.py:backup`, `flows/restore.py:restore`,
`flows/maintenance.py:retention`, `:forget`, `:verify` and `:copy`, `flows/export.py:export`, and
`flows/credentials.py:check_credentials`.
"""
