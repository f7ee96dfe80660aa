import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    """What hangs off a step (map items, approvals, earlier attempts) and a sub-chain run's
    parent step are linked without a database constraint, and the step's run, like those,
    without an index of its own (each has a unique constraint that starts with it): a purge
    deletes a million steps at a time, and every constraint on a step and every index of a
    step was work per deleted row. On SQLite the runs, map items, approvals and
    attempts tables are rebuilt (the steps' is not)."""

    dependencies = [
        ('chains', '0019_reads_indexes'),
    ]

    operations = [
        migrations.AlterField(
            model_name='run',
            name='parent_step',
            field=models.ForeignKey(
                blank=True, db_constraint=False, null=True,
                help_text='The flow.chain step of another run that started this one.',
                on_delete=django.db.models.deletion.SET_NULL, related_name='child_runs',
                to='chains.steprun'),
        ),
        # Only the index goes: dropped by name rather than by rebuilding the biggest table.
        migrations.SeparateDatabaseAndState(
            state_operations=[migrations.AlterField(
                model_name='steprun',
                name='run',
                field=models.ForeignKey(
                    db_index=False, on_delete=django.db.models.deletion.CASCADE,
                    related_name='step_runs', to='chains.run'),
            )],
            database_operations=[migrations.RunSQL(
                'DROP INDEX IF EXISTS "chains_steprun_run_id_83ad655f"',
                reverse_sql='CREATE INDEX "chains_steprun_run_id_83ad655f" '
                            'ON "chains_steprun" ("run_id")',
            )],
        ),
        migrations.AlterField(
            model_name='mapitem',
            name='step_run',
            field=models.ForeignKey(
                db_constraint=False, db_index=False,
                on_delete=django.db.models.deletion.CASCADE, related_name='items',
                to='chains.steprun'),
        ),
        migrations.AlterField(
            model_name='approval',
            name='step_run',
            field=models.ForeignKey(
                db_constraint=False, db_index=False,
                on_delete=django.db.models.deletion.CASCADE, related_name='approvals',
                to='chains.steprun'),
        ),
        migrations.AlterField(
            model_name='stepattempt',
            name='step_run',
            field=models.ForeignKey(
                db_constraint=False, db_index=False,
                on_delete=django.db.models.deletion.CASCADE, related_name='earlier_attempts',
                to='chains.steprun'),
        ),
    ]
