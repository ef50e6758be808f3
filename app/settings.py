from __future__ import annotations

from decimal import Decimal
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

FAL_CONNECT_TIMEOUT = 5.0


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
    # fal's storage, for file inputs uploaded before submission (app.fal.storage): the REST
    # host hands out CDN tokens, the CDN host takes the bytes. The fake fal serves both.
    fal_rest_url: str = "https://rest.fal.ai"
    fal_cdn_url: str = "https://v3.fal.media"
    # Sent with each submission as X-Fal-Object-Lifecycle-Preference: fal deletes the files a
    # request made after this long. Unset: the account's setting. Set it only with outputs
    # mirrored (FALRELAY_STORAGE_URL), and longer than a mirror can take to catch up.
    fal_media_ttl_seconds: int | None = Field(default=None, ge=1)
    # fal signs every account's webhooks with the same keys. The callback URL's token already
    # ties a callback to our job; with this set, one signed for another fal account is also
    # refused (X-Fal-Webhook-User-Id).
    fal_user_id: str | None = None
    public_base_url: str | None = None
    allow_private_webhook_urls: bool = False

    db_pool_min_size: int = Field(default=2, ge=0)
    db_pool_max_size: int = Field(default=20, ge=1)
    # 0 turns asyncpg's prepared-statement cache off, as PgBouncer in transaction mode needs.
    db_statement_cache_size: int = Field(default=100, ge=0)
    max_body_bytes: int = Field(default=64 * 1024, ge=1024)
    # File inputs (app.jobs.file_inputs): a data URI may hold up to max_input_file_bytes; one
    # above inline_input_file_bytes is uploaded to fal's storage and the job keeps its URL.
    # A job's body may be large enough for one file at the limit, base64-encoded (4/3).
    max_input_file_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)
    inline_input_file_bytes: int = Field(default=64 * 1024, ge=0)
    max_job_body_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)

    # Where job outputs are mirrored (app.storage): `file:///abs/dir` (falrelay serves the files
    # itself at signed /files/... URLs), `s3://bucket/prefix` (any S3-compatible store, with
    # s3_endpoint_url and the standard AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_REGION),
    # or unset: no mirroring, jobs keep fal's URLs. `falrelay dev` uses <data dir>/files.
    storage_url: str | None = None
    # The S3 API's address when it is not AWS's (MinIO, R2, moto...); requests are path-style.
    s3_endpoint_url: str | None = None
    # A CDN (or public bucket) serving the S3 store's prefix: URLs are then <this>/<key>,
    # unsigned, instead of presigned ones.
    storage_public_url: str | None = None
    # How long the URLs we hand out for mirrored files live. 7 days is the most S3 presigning
    # (SigV4) allows; file:// URLs round their expiry up to the hour so browsers can cache.
    storage_url_ttl_seconds: int = Field(default=7 * 24 * 3600, ge=60, le=7 * 24 * 3600)

    @field_validator("storage_url")
    @classmethod
    def _storage_location(cls, value: str | None) -> str | None:
        from app.storage.location import parse_location

        if value:
            parse_location(value)
        return value or None

    # A revoked key keeps working in a process for at most this long.
    api_key_cache_seconds: float = Field(default=30.0, ge=0)

    # Slow and idle clients (app.http_server). Our requests are small (a body is at most
    # max_body_bytes), so 10 s for headers and 30 s for a body leave room for a slow mobile
    # link while a slowloris holds a socket for seconds, not forever. Keep-alive is uvicorn's 5 s;
    # behind a load balancer it must exceed the balancer's idle timeout (AWS ALB: 60 s), else
    # the balancer reuses a connection just as we close it and answers 502. Long responses
    # (event streams, `Prefer: wait`) are never cut: these bound only the client's sending.
    http_header_timeout_seconds: float = Field(default=10.0, gt=0)
    http_body_timeout_seconds: float = Field(default=30.0, gt=0)
    http_keepalive_timeout_seconds: int = Field(default=5, ge=1)
    # Past this many open connections a request is answered 503. 2048 connections cost tens of
    # MB and fit the descriptors the process raises its soft limit to at start (see deploy/).
    http_max_connections: int = Field(default=2048, ge=1)
    # Peers whose X-Forwarded-Proto and X-Forwarded-For uvicorn believes: a TLS-terminating
    # proxy's address (or CIDR), comma-separated, or "*" where only the proxy can reach the
    # process. Without it, behind an ingress every request looks like plain http from the
    # proxy: console logins are refused (their Origin is https) and cookies are not Secure.
    forwarded_allow_ips: str = "127.0.0.1"

    # Client limits when the client has none of its own (`falrelay clients limits`). Unset is
    # unlimited; set a variable to "unlimited" to lift a protective default. No request rate by
    # default: a rate costs every request of the client one statement (the shared GCRA state),
    # and the caps below already bound what a runaway client can make us store and send.
    # Endpoints and queued jobs are capped by default: one job fans out to every endpoint (a
    # client with 2,000 endpoints turned one job into 2,000 POSTs), and the queue is shared.
    default_requests_per_second: float | None = Field(default=None, gt=0)
    # Requests a client may send at once above the rate; unset: one second's worth.
    default_burst: int | None = Field(default=None, ge=1)
    default_max_endpoints: int | None = Field(default=50, ge=0)
    default_max_queued_jobs: int | None = Field(default=10_000, ge=0)
    default_max_in_flight: int | None = Field(default=None, ge=0)
    default_monthly_budget_usd: Decimal | None = Field(default=None, ge=0, decimal_places=4)

    @field_validator(
        "default_requests_per_second",
        "default_burst",
        "default_max_endpoints",
        "default_max_queued_jobs",
        "default_max_in_flight",
        "default_monthly_budget_usd",
        mode="before",
    )
    @classmethod
    def _unlimited_is_none(cls, value: object) -> object:
        if isinstance(value, str) and value.strip().lower() in ("", "unlimited", "none"):
            return None
        return value

    log_level: str = "INFO"
    log_format: Literal["json", "text"] = "json"
    access_log: bool = True
    # `falrelay worker` has no HTTP server; with a port set it serves /metrics there.
    metrics_port: int | None = Field(default=None, ge=1, le=65535)
    # When set, GET /metrics asks for `Authorization: Bearer <token>` (401 otherwise): the
    # metrics name clients and their spend. Unset: open, for a port only Prometheus reaches.
    metrics_token: SecretStr | None = None
    # Queue gauges are read from Postgres at most this often per process, however many scrape.
    metrics_queue_refresh_seconds: float = Field(default=15.0, ge=0)

    # Owned outputs (app.outputs): the largest output file copied to the store, the jobs whose
    # files one worker copies at once, and a copy's claim (a few large videos over a slow link).
    mirror_max_file_bytes: int = Field(default=2 * 1024**3, ge=1024)
    mirror_concurrency: int = Field(default=8, ge=1)
    mirror_lease_seconds: float = Field(default=600.0, gt=30)

    # Workers. Invariant: every lease is longer than fal_timeout_seconds, else a slow call could
    # outlive its claim and a second worker could repeat it.
    # A submission's step waits on two round trips (fal's answer, then the group commit that
    # records it), so a loop's rate is its concurrency over that wait: measured in the queue
    # benchmark, 2,100 submissions/s at 32, 2,600 at 64, 3,300 at 128 (bench/README.md). Calls
    # beyond what fal_max_in_flight leaves free are never made, whatever this allows.
    worker_concurrency: int = Field(default=128, ge=1, description="fal calls in flight per loop")
    worker_poll_seconds: float = Field(default=1.0, gt=0, description="queue scan when idle")
    fal_timeout_seconds: float = Field(default=30.0, gt=0)
    submit_lease_seconds: float = Field(default=120.0, gt=0)
    submit_max_attempts: int = Field(default=10, ge=1)
    # Requests at fal (submitted, not yet finished) across every replica, counted in Postgres.
    # 40 is the concurrency fal scales an account to: fal runs that many at once and queues the
    # rest first-in first-out, where no fair share can reach them. Set it to your account's
    # limit (new accounts: 2).
    fal_max_in_flight: int = Field(default=40, ge=1)
    # Slots go to the client with the fewest in flight for its weight. False hands them out
    # first-in first-out across clients (the old order), kept as a baseline for benchmarks.
    fair_share: bool = True
    reconcile_lease_seconds: float = Field(default=90.0, gt=0)
    reconcile_after_seconds: float = Field(
        default=30.0, gt=0, description="with webhooks: poll fal when no callback came by then"
    )
    poll_interval_seconds: float = Field(
        default=1.0, gt=0, description="without webhooks: first status poll, growing to 15 s"
    )
    job_timeout_seconds: float = Field(default=6 * 3600.0, gt=0)
    delivery_concurrency: int = Field(default=128, ge=1, description="webhooks in flight")
    delivery_per_endpoint_concurrency: int = Field(
        default=32, ge=1, description="webhooks in flight to one endpoint (or callback URL)"
    )
    # A process's delivery slots are shared between clients by weight: while others have
    # deliveries due, no client holds more than its share, so one client's hanging receivers
    # cannot delay another's webhooks. False claims first-in first-out across clients (the old
    # order), kept as a baseline for benchmarks.
    delivery_fair_share: bool = True
    # The circuit breaker (app.webhooks.policy): this many breaker failures in a row
    # (no answer, or a 5xx) open it for the cool-down, doubling per trip up to 10 minutes.
    delivery_breaker_failures: int = Field(default=5, ge=1)
    delivery_breaker_cooldown_seconds: float = Field(default=30.0, gt=0)
    delivery_timeout_seconds: float = Field(default=15.0, gt=0)
    delivery_lease_seconds: float = Field(default=60.0, gt=0)
    shutdown_timeout_seconds: float = Field(default=20.0, ge=0)
    # A loop (submission, reconciliation, delivery, recording, LISTEN) with no completed
    # iteration for this long is stalled: its iteration is cancelled and restarted, /readyz
    # answers 503 naming it, and at three times this /livez fails so that the process is
    # restarted. An idle loop completes an iteration every worker_poll_seconds, a busy one
    # one per claim, so a minute is far beyond any healthy iteration.
    loop_stall_seconds: float = Field(default=60.0, gt=0)

    # Retention (app.lifecycle): a finished job (succeeded, failed, canceled) is deleted this
    # many days after it finished, with its events, deliveries, attempts and mirrored files.
    # "off" (or 0) keeps everything. 30 days is far past the webhook retry schedule (about 28
    # hours) and keeps a month of jobs in the console and /v1/usage; client_spend (money) is
    # never purged.
    retention_days: float | None = Field(default=30.0, gt=0)
    # Jobs deleted per transaction: a batch holds its row locks for milliseconds.
    retention_batch_size: int = Field(default=500, ge=1, le=10_000)
    # How long the retention loop sleeps once nothing is left to purge.
    retention_interval_seconds: float = Field(default=60.0, gt=0)

    @field_validator("retention_days", mode="before")
    @classmethod
    def _off_is_none(cls, value: object) -> object:
        if isinstance(value, str) and value.strip().lower() in ("", "off", "none", "0"):
            return None
        if isinstance(value, int | float) and value == 0:
            return None
        return value

    @model_validator(mode="after")
    def _leases_outlive_calls(self) -> Settings:
        # A submission is one fal call; a reconciliation two (status, then result).
        if self.submit_lease_seconds <= self.fal_timeout_seconds + FAL_CONNECT_TIMEOUT:
            raise ValueError("submit_lease_seconds must be longer than one fal call")
        if self.reconcile_lease_seconds <= 2 * (self.fal_timeout_seconds + FAL_CONNECT_TIMEOUT):
            raise ValueError("reconcile_lease_seconds must be longer than two fal calls")
        if self.delivery_lease_seconds <= self.delivery_timeout_seconds:
            raise ValueError("delivery_lease_seconds must be longer than delivery_timeout_seconds")
        if self.loop_stall_seconds <= 2 * self.worker_poll_seconds:
            raise ValueError("loop_stall_seconds must be longer than two worker_poll_seconds")
        return self

    @property
    def fal_connections(self) -> int:
        """Connections to fal a process may hold: one for every call its submission and
        reconciliation loops may make at once, so that none waits for one (the wait would count
        against its timeout), and room for the API's (cancels, fal's keys)."""
        return max(100, 2 * self.worker_concurrency)

    def secrets(self) -> list[str]:
        """Values no log line may contain."""
        values = [self.fal_key.get_secret_value()] if self.fal_key else []
        if self.metrics_token is not None:
            values.append(self.metrics_token.get_secret_value())
        return values

    def require_fal_key(self) -> str:
        if self.fal_key is None or not self.fal_key.get_secret_value():
            raise MissingSetting(
                "FALRELAY_FAL_KEY (or FAL_KEY) is not set: workers need a fal API key to submit "
                "jobs. `falrelay dev` runs against its built-in fake fal and needs none."
            )
        return self.fal_key.get_secret_value()

    def require_database_url(self) -> str:
        if not self.database_url:
            raise MissingDatabaseURL
        return self.database_url


class MissingSetting(RuntimeError):
    """A setting this command cannot run without; the message says what to set."""


class MissingDatabaseURL(MissingSetting):
    def __init__(self) -> None:
        super().__init__(
            "FALRELAY_DATABASE_URL is not set. Set it to postgresql+asyncpg://user@host:5432/db, "
            "or run `falrelay dev`, which starts an embedded Postgres for you."
        )
