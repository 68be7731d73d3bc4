"""`vaultflow-wal push %p` / `vaultflow-wal fetch %f %p`: PostgreSQL's archive_command and
restore_command. This package imports only the core (no Prefect, no typer), so the server can
start it for every segment from a small environment any user can run (`make wal-venv`)."""
