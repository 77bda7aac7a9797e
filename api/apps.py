"""The api app's configuration."""

from __future__ import annotations

from django.apps import AppConfig


class ApiConfig(AppConfig):
    name = "api"
    verbose_name = "API"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Batch ids expire like the engine's own rows: the hourly prune deletes them in
        # short chunks (the engine never imports this app; the app registers with it).
        from api.models import BATCH_ID_RETAIN_DAYS, IngestBatch
        from monitoring import retention

        retention.register(
            retention.Target(
                "ingest_batch_ids",
                IngestBatch._meta.db_table,
                "created < %s",
                "created",
                lambda: BATCH_ID_RETAIN_DAYS,
            )
        )
