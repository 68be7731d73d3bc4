"""Flow parameter types that name a block: the Prefect UI's run form offers a picker of saved
blocks of these types (their schema carries `block_type_slug`), and a string stays accepted
(a block name, a URL or a path), so deployments that pass names keep working.

Importing this module imports the block classes (and prefect-aws / prefect-azure with
BackupRepository): flows need them to build their parameter schema."""

from __future__ import annotations

from blocks.engines import FileTree, MySQLServer, PostgresServer, SqliteDatabase, SqlServer
from blocks.repository import BackupRepository

RepositoryChoice = BackupRepository | str
"""A saved BackupRepository block, or its name, a local path or an s3:// / az:// location."""

EngineChoice = PostgresServer | MySQLServer | SqlServer | SqliteDatabase | FileTree | str
"""A saved engine block, or its name (`name/database` for another database), or a database URL."""

FileTreeChoice = FileTree | str
"""A saved FileTree block, or its name, or a file:///dir URL."""

