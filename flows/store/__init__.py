"""Storage: SQLModel tables, the database connection, Alembic migrations and the batch writes of the runner.

This package is the only part of the project that imports SQLModel.
"""
