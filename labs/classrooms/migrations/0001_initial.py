"""Classroom, Membership and ClassMessage move here from the `labs` app, tables and all.

State only: the tables already exist (labs 0001-0004 made them, and they keep
their labs_* names through Meta.db_table); labs 0005 drops the models from the
old app's state. A database made before the split opens unchanged.
"""

import django.db.models.deletion
import labs.classrooms.models
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
                name='Classroom',
                fields=[
                    ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                    ('name', models.CharField(max_length=200)),
                    ('starts', models.DateTimeField()),
                    ('ends', models.DateTimeField()),
                    ('code', models.CharField(default=labs.classrooms.models._join_code, max_length=12, unique=True)),
                    ('created', models.DateTimeField(auto_now_add=True)),
                    ('lessons', models.ManyToManyField(related_name='classrooms', to='courses.lesson')),
                    ('owner', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='classrooms_taught', to=settings.AUTH_USER_MODEL)),
                ],
                options={
                    'db_table': 'labs_classroom',
                    'ordering': ['-starts'],
                },
            ),
            migrations.CreateModel(
                name='ClassMessage',
                fields=[
                    ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                    ('text', models.TextField(max_length=2000)),
                    ('sent', models.DateTimeField(auto_now_add=True)),
                    ('sender', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='+', to=settings.AUTH_USER_MODEL)),
                    ('to_user', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.CASCADE, related_name='class_messages', to=settings.AUTH_USER_MODEL)),
                    ('classroom', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='messages', to='classrooms.classroom')),
                ],
                options={
                    'db_table': 'labs_classmessage',
                    'ordering': ['-sent'],
                },
            ),
            migrations.CreateModel(
                name='Membership',
                fields=[
                    ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                    ('joined', models.DateTimeField(auto_now_add=True)),
                    ('hand_raised', models.DateTimeField(blank=True, null=True)),
                    ('classroom', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='memberships', to='classrooms.classroom')),
                    ('user', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='memberships', to=settings.AUTH_USER_MODEL)),
                ],
                options={
                    'db_table': 'labs_membership',
                    'ordering': ['classroom', 'joined'],
                    'constraints': [models.UniqueConstraint(fields=('classroom', 'user'), name='unique_membership')],
                },
            ),
        ]),
    ]
