"""LabSession and LabNode move here from the `labs` app, tables and all.

State only: the tables already exist (labs 0001-0004 made them, and they keep
their labs_* names through Meta.db_table); labs 0005 drops the models from the
old app's state. A database made before the split opens unchanged.
"""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):

    initial = True

    dependencies = [
        ('labs', '0004_session_queue'),
        ('courses', '0001_initial'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(state_operations=[
            migrations.CreateModel(
                name='LabSession',
                fields=[
                    ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                    ('state', models.CharField(choices=[('starting', 'starting'), ('ready', 'ready'), ('failed', 'failed'), ('stopped', 'stopped'), ('queued', 'queued')], default='starting', max_length=10)),
                    ('error', models.TextField(blank=True)),
                    ('created', models.DateTimeField(auto_now_add=True)),
                    ('updated', models.DateTimeField(auto_now=True)),
                    ('expires', models.DateTimeField(blank=True, null=True)),
                    ('last_input', models.DateTimeField(blank=True, null=True)),
                    ('ended_because', models.CharField(blank=True, max_length=20)),
                    ('controller', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to=settings.AUTH_USER_MODEL)),
                    ('lesson', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='sessions', to='courses.lesson')),
                    ('user', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='lab_sessions', to=settings.AUTH_USER_MODEL)),
                ],
                options={
                    'db_table': 'labs_labsession',
                    'ordering': ['-created'],
                },
            ),
            migrations.CreateModel(
                name='LabNode',
                fields=[
                    ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                    ('name', models.CharField(default='node1', max_length=31)),
                    ('runtime_id', models.CharField(blank=True, max_length=100)),
                    ('state', models.CharField(choices=[('starting', 'starting'), ('ready', 'ready'), ('failed', 'failed'), ('stopped', 'stopped')], default='starting', max_length=10)),
                    ('error', models.TextField(blank=True)),
                    ('ports', models.JSONField(blank=True, default=list)),
                    ('session', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='nodes', to='sandboxes.labsession')),
                ],
                options={
                    'db_table': 'labs_labnode',
                    'ordering': ['session', 'name'],
                    'constraints': [models.UniqueConstraint(fields=('session', 'name'), name='unique_node_name')],
                },
            ),
        ]),
    ]
