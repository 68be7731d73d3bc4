"""vaultflow: database backups into a chunked, encrypted repository.

The core package (engines, repository format, storage backends, catalog) imports nothing
from Prefect; `blocks`, `tasks` and `flows` build on it, and the CLI sits on the flows.
"""

__version__ = "0.1.0"
