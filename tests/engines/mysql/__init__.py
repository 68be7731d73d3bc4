"""MySQL/MariaDB engine tests, against the MariaDB server at 127.0.0.1:3306."""
