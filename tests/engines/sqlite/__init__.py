"""SQLite engine tests (no server: files under tmp_path)."""
