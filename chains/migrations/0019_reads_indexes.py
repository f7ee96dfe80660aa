from django.db import migrations, models


class Migration(migrations.Migration):
    """Indexes of the dashboard's and /tasks/statistics' reads at a million runs: the newest
    FAILED runs by finish time, and the (few) runs ever retried."""

    dependencies = [
        ('chains', '0018_bulk_jobs'),
    ]

    operations = [
        migrations.AddIndex(
            model_name='run',
            index=models.Index(condition=models.Q(('status', 'FAILED')),
                               fields=['status', '-finished_at'], name='run_failed_finished'),
        ),
        migrations.AddIndex(
            model_name='run',
            index=models.Index(condition=models.Q(('retries__gt', 0)), fields=['created_by'],
                               name='run_retried'),
        ),
    ]
