"""Alembic migrations, shipped inside the package so that `falrelay migrate` finds them."""
