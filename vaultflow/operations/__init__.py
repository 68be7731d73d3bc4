"""The operations on a repository: backup, restore and export, verify, copy, forget, prune, retention, share."""
