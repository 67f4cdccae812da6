"""Lesson, Step, LessonFile, StepProgress and LessonActivity move here from the `labs` app, tables and all.

State only: the tables already exist (labs 0001-0004 made them, and they keep
their labs_* names through Meta.db_table); labs 0005 drops the models from the
old app's state. A database made before the split opens unchanged.
"""

import django.db.models.deletion
import django.utils.timezone
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
                name='Lesson',
                fields=[
                    ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                    ('slug', models.SlugField(unique=True)),
                    ('title', models.CharField(max_length=200)),
                    ('summary', models.TextField(blank=True)),
                    ('minutes', models.PositiveIntegerField(default=10)),
                    ('order', models.IntegerField(default=0)),
                    ('node_names', models.CharField(default='node1', max_length=200)),
                ],
                options={
                    'db_table': 'labs_lesson',
                    'ordering': ['order', 'slug'],
                },
            ),
            migrations.CreateModel(
                name='Step',
                fields=[
                    ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                    ('number', models.PositiveIntegerField()),
                    ('name', models.CharField(max_length=100)),
                    ('title', models.CharField(max_length=200)),
                    ('body_html', models.TextField()),
                    ('check_script', models.TextField(blank=True)),
                    ('solve_script', models.TextField(blank=True)),
                    ('setup_script', models.TextField(blank=True)),
                    ('node', models.CharField(default='node1', max_length=31)),
                    ('quiz_question', models.TextField(blank=True)),
                    ('quiz_choices', models.JSONField(blank=True, default=list)),
                    ('quiz_answer', models.IntegerField(blank=True, null=True)),
                    ('quiz_explain', models.TextField(blank=True)),
                    ('lesson', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='steps', to='courses.lesson')),
                ],
                options={
                    'db_table': 'labs_step',
                    'ordering': ['lesson', 'number'],
                },
            ),
            migrations.CreateModel(
                name='StepProgress',
                fields=[
                    ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                    ('state', models.CharField(choices=[('pending', 'pending'), ('done', 'done')], default='pending', max_length=10)),
                    ('message', models.TextField(blank=True)),
                    ('checked_at', models.DateTimeField(blank=True, null=True)),
                    ('done_at', models.DateTimeField(blank=True, null=True)),
                    ('step', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='progress', to='courses.step')),
                    ('user', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='step_progress', to=settings.AUTH_USER_MODEL)),
                ],
                options={
                    'db_table': 'labs_stepprogress',
                },
            ),
            migrations.CreateModel(
                name='LessonActivity',
                fields=[
                    ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                    ('started', models.DateTimeField(default=django.utils.timezone.now)),
                    ('last', models.DateTimeField(default=django.utils.timezone.now)),
                    ('lesson', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='activity', to='courses.lesson')),
                    ('user', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='lesson_activity', to=settings.AUTH_USER_MODEL)),
                ],
                options={
                    'verbose_name_plural': 'lesson activity',
                    'db_table': 'labs_lessonactivity',
                    'constraints': [models.UniqueConstraint(fields=('user', 'lesson'), name='unique_activity_per_lesson')],
                },
            ),
            migrations.CreateModel(
                name='LessonFile',
                fields=[
                    ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                    ('node', models.CharField(default='node1', max_length=31)),
                    ('path', models.CharField(max_length=500)),
                    ('mode', models.PositiveIntegerField(default=420)),
                    ('content', models.BinaryField()),
                    ('lesson', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='files', to='courses.lesson')),
                ],
                options={
                    'db_table': 'labs_lessonfile',
                    'ordering': ['lesson', 'node', 'path'],
                    'constraints': [models.UniqueConstraint(fields=('lesson', 'node', 'path'), name='unique_lesson_file')],
                },
            ),
            migrations.AddConstraint(
                model_name='step',
                constraint=models.UniqueConstraint(fields=('lesson', 'number'), name='unique_step_number'),
            ),
            migrations.AddConstraint(
                model_name='stepprogress',
                constraint=models.UniqueConstraint(fields=('user', 'step'), name='unique_progress_per_step'),
            ),
        ]),
    ]
