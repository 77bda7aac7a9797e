"""Issue 19: an index of the integration-wide ("" endpoint) buckets, holding their counters.

The overview reads, per integration, the "" rows of a window: the all-endpoints totals the
rollup has always written beside each endpoint's row. Through the unique key bucket_key such
a range also walks every endpoint's rows (~20 per period), each a table lookup to test its
endpoint and source. This partial index holds only the "" rows, by source, with the counters
the sparklines and verdicts sum, so those reads are index-only. Measured interleaved on the
2 M-row benchmark database (SQLite, load average ~6): the 7-day sparkline read took 502 ms
through bucket_key and 166 ms through this index.

No new grain and so no backfill: the "" rows exist already, and retention prunes them with
the rest of their grain.
"""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("monitoring", "0016_batch_size")]

    operations = [
        migrations.AddIndex(
            model_name="metricbucket",
            index=models.Index(
                condition=models.Q(endpoint=""),
                fields=[
                    "integration",
                    "grain",
                    "source",
                    "start",
                    "endpoint",
                    "total",
                    "ok",
                    "client_errors",
                    "server_errors",
                    "s401",
                    "s403",
                    "s429",
                ],
                name="bucket_all_endpoints",
            ),
        ),
    ]
