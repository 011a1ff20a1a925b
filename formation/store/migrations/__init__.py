"""Alembic migrations of the store, shipped in the package and run without an ``alembic.ini``.

``env.py`` is Alembic's environment script; ``versions/`` holds one revision per schema change, numbered
``0001``, ``0002``, …; :mod:`formation.store.migrate` configures Alembic in code and runs them.
"""
