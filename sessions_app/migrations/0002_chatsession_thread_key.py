"""ChatSession.thread (a ForeignKey to chat.Thread) becomes a plain thread_key."""

from django.db import migrations, models
from django.db.models import F, Value
from django.db.models.functions import Coalesce


def copy_thread_to_key(apps, schema_editor):
    ChatSession = apps.get_model("sessions_app", "ChatSession")
    db = schema_editor.connection.alias
    ChatSession.objects.using(db).update(
        thread_key=Coalesce(F("thread_id"), Value(""))
    )


def copy_key_to_thread(apps, schema_editor):
    ChatSession = apps.get_model("sessions_app", "ChatSession")
    Thread = apps.get_model("chat", "Thread")
    db = schema_editor.connection.alias
    # Only keys that still name a thread: the foreign key would refuse the others.
    ChatSession.objects.using(db).filter(
        thread_key__in=Thread.objects.using(db).values("pk")
    ).update(thread_id=F("thread_key"))


class Migration(migrations.Migration):

    dependencies = [
        ("chat", "0001_initial"),
        ("sessions_app", "0001_initial"),
    ]

    operations = [
        migrations.AddField(
            model_name="chatsession",
            name="thread_key",
            field=models.CharField(blank=True, default="", max_length=64),
            preserve_default=False,
        ),
        migrations.RunPython(copy_thread_to_key, copy_key_to_thread),
        migrations.RemoveField(
            model_name="chatsession",
            name="thread",
        ),
    ]
