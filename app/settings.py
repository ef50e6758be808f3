from __future__ import annotations

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every knob of a falrelay process; each is read from `FALRELAY_<NAME>`."""

    model_config = SettingsConfigDict(env_prefix="FALRELAY_", extra="ignore")

    database_url: str | None = Field(
        default=None,
        description="postgresql+asyncpg://user:password@host:port/db",
    )
    fal_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("FALRELAY_FAL_KEY", "FAL_KEY")
    )
    fal_queue_url: str = "https://queue.fal.run"
    fal_jwks_url: str = "https://rest.alpha.fal.ai/.well-known/jwks.json"
    public_base_url: str | None = None
    allow_private_webhook_urls: bool = False

    db_pool_min_size: int = Field(default=2, ge=0)
    db_pool_max_size: int = Field(default=20, ge=1)
    # 0 turns asyncpg's prepared-statement cache off, as PgBouncer in transaction mode needs.
    db_statement_cache_size: int = Field(default=100, ge=0)
    max_body_bytes: int = Field(default=64 * 1024, ge=1024)
    # A revoked key keeps working in a process for at most this long.
    api_key_cache_seconds: float = Field(default=30.0, ge=0)

    def require_database_url(self) -> str:
        if not self.database_url:
            raise MissingDatabaseURL
        return self.database_url


class MissingDatabaseURL(RuntimeError):
    def __init__(self) -> None:
        super().__init__(
            "FALRELAY_DATABASE_URL is not set. Set it to postgresql+asyncpg://user@host:5432/db, "
            "or run `falrelay dev`, which starts an embedded Postgres for you."
        )
