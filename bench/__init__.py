"""``make bench``: fieldsync against a real PouchDB 9 client (issue 2, point 8).

Run ``python -m bench`` (``BENCH_QUICK=1`` for a 10x smaller smoke run). See
:mod:`bench.run` for what is measured and :mod:`bench.seed` for the fast seeding.
"""
