"""The SQL of imported catalog entries (the `models` table)."""

from __future__ import annotations

from typing import Any

from app.db.pool import Connection, Pool

ALL_DOCUMENTS = "SELECT id, document FROM models ORDER BY id"

UPSERT = """
INSERT INTO models (id, document) VALUES ($1, $2)
ON CONFLICT (id) DO UPDATE SET document = EXCLUDED.document, updated_at = now()
RETURNING (xmax = 0) AS created
"""

DELETE = "DELETE FROM models WHERE id = $1"


async def all_documents(pool: Pool | Connection) -> list[tuple[str, Any]]:
    rows = await pool.fetch(ALL_DOCUMENTS)
    return [(row["id"], row["document"]) for row in rows]


async def save(pool: Pool | Connection, model_id: str, document: dict[str, Any]) -> bool:
    """Store an entry; True when it is new, False when it replaced one."""
    created: bool = await pool.fetchval(UPSERT, model_id, document)
    return created


async def delete(pool: Pool | Connection, model_id: str) -> bool:
    status: str = await pool.execute(DELETE, model_id)
    return status.endswith(" 1")
