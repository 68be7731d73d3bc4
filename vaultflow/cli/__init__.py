"""The `vaultflow` command line; it runs the same flows the Prefect UI runs."""
