"""Backups under a split key: ``fieldsync backup`` and ``fieldsync restore``.

    snapshot   a consistent copy of the live store (SQLite's backup API)   snapshot.py
    sealed     the archive file: header + AES-256-GCM chunks (STREAM)        sealed.py
    archive    what the archive holds; writing it, restoring from it        archive.py
    shares     the archive key split K of N (Shamir, pycryptodome)           shares.py
    cli        the two commands                                             cli.py
"""
