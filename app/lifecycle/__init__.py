"""Data lifecycle: retention of finished jobs, the purge command, and deleting one job.

A finished job goes with everything that hangs off it (events, deliveries and their attempts,
its idempotency key, which lives on its row) and with its mirrored files. Rows go first, in
short transactions; files are deleted after the commit, through an outbox of keys
(`file_deletions`) so that a store that fails, or a process that dies, leaves no orphan.
"""
