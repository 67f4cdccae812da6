"""The models leave the `labs` app for labs.accounts, labs.courses, labs.sandboxes
and labs.classrooms (their 0001 migrations take them over).

State only: no table is touched. The content types (and with them the admin's
permissions and log entries) are handed to the new apps.
"""

from django.db import migrations


MOVED = {
    "accounts": ["profile"],
    "courses": ["lesson", "step", "lessonfile", "stepprogress", "lessonactivity"],
    "sandboxes": ["labsession", "labnode"],
    "classrooms": ["classroom", "membership", "classmessage"],
}


def _relabel(apps, old_label_of, new_label_of):
    ContentType = apps.get_model("contenttypes", "ContentType")
    for app, models in MOVED.items():
        for model in models:
            old, new = old_label_of(app), new_label_of(app)
            if ContentType.objects.filter(app_label=new, model=model).exists():
                continue  # already made (a fresh database's post_migrate): keep it
            ContentType.objects.filter(app_label=old, model=model).update(app_label=new)


def move_content_types(apps, schema_editor):
    _relabel(apps, lambda app: "labs", lambda app: app)


def move_content_types_back(apps, schema_editor):
    _relabel(apps, lambda app: app, lambda app: "labs")


class Migration(migrations.Migration):

    dependencies = [
        ('labs', '0004_session_queue'),
        ('accounts', '0001_initial'),
        ('courses', '0001_initial'),
        ('sandboxes', '0001_initial'),
        ('classrooms', '0001_initial'),
        ('contenttypes', '0002_remove_content_type_name'),
    ]

    operations = [
        migrations.RunPython(move_content_types, move_content_types_back),
        migrations.SeparateDatabaseAndState(state_operations=[
            migrations.RemoveField(
                model_name='classroom',
                name='lessons',
            ),
            migrations.RemoveField(
                model_name='classroom',
                name='owner',
            ),
            migrations.RemoveField(
                model_name='membership',
                name='classroom',
            ),
            migrations.RemoveField(
                model_name='labnode',
                name='session',
            ),
            migrations.RemoveField(
                model_name='labsession',
                name='controller',
            ),
            migrations.RemoveField(
                model_name='labsession',
                name='lesson',
            ),
            migrations.RemoveField(
                model_name='labsession',
                name='user',
            ),
            migrations.RemoveField(
                model_name='lessonactivity',
                name='lesson',
            ),
            migrations.RemoveField(
                model_name='step',
                name='lesson',
            ),
            migrations.RemoveField(
                model_name='lessonfile',
                name='lesson',
            ),
            migrations.RemoveField(
                model_name='lessonactivity',
                name='user',
            ),
            migrations.RemoveField(
                model_name='membership',
                name='user',
            ),
            migrations.RemoveField(
                model_name='profile',
                name='user',
            ),
            migrations.RemoveField(
                model_name='stepprogress',
                name='step',
            ),
            migrations.RemoveField(
                model_name='stepprogress',
                name='user',
            ),
            migrations.DeleteModel(
                name='ClassMessage',
            ),
            migrations.DeleteModel(
                name='Classroom',
            ),
            migrations.DeleteModel(
                name='LabNode',
            ),
            migrations.DeleteModel(
                name='LabSession',
            ),
            migrations.DeleteModel(
                name='Lesson',
            ),
            migrations.DeleteModel(
                name='LessonFile',
            ),
            migrations.DeleteModel(
                name='LessonActivity',
            ),
            migrations.DeleteModel(
                name='Membership',
            ),
            migrations.DeleteModel(
                name='Profile',
            ),
            migrations.DeleteModel(
                name='Step',
            ),
            migrations.DeleteModel(
                name='StepProgress',
            ),
        ]),
    ]
