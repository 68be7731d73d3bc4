"""Deployments, schedules and automations as code.

Layer above flows/: `specs` reads prefect.yaml (the one source of deployment names,
schedules and parameters for both `prefect deploy --all` and `vaultflow serve`),
`serving` serves them in one process, `automations` applies the YAML under
deployments/automations/. Every file error names the file and line.
"""
