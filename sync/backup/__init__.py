"""Backups under a split key: ``fieldsync backup`` and ``fieldsync restore``.

- snapshot.py: a consistent copy of the live store (SQLite's backup API)
- sealed.py: the archive file, a header and AES-256-GCM chunks (STREAM)
- archive.py: what the archive holds; writing it, restoring from it
- shares.py: the archive key split K of N (Shamir's secret sharing, pycryptodome)
- cli.py: the two commands
"""
