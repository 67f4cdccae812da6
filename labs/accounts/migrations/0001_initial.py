"""Profile move here from the `labs` app, tables and all.

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
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(state_operations=[
            migrations.CreateModel(
                name='Profile',
                fields=[
                    ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                    ('guest', models.BooleanField(default=False, help_text="Made by 'Try as a guest'; becomes a normal account (with its progress) on sign-up.")),
                    ('user', models.OneToOneField(on_delete=django.db.models.deletion.CASCADE, related_name='lab_profile', to=settings.AUTH_USER_MODEL)),
                ],
                options={
                    'db_table': 'labs_profile',
                },
            ),
        ]),
    ]
