"""API tokens made before they were hashed (Django REST framework's authtoken table, in plain
text) keep working as digests; the plain-text table is dropped."""

import hashlib

from django.db import migrations


def hash_existing_tokens(apps, schema_editor):
    connection = schema_editor.connection
    if "authtoken_token" not in connection.introspection.table_names():
        return  # a database made after the change
    ApiToken = apps.get_model("imageactions", "ApiToken")
    with connection.cursor() as cursor:
        cursor.execute("SELECT key, user_id FROM authtoken_token")
        rows = cursor.fetchall()
    ApiToken.objects.bulk_create(
        [ApiToken(user_id=user_id, digest=hashlib.sha256(key.encode()).hexdigest()) for key, user_id in rows],
        ignore_conflicts=True,
    )
    schema_editor.execute("DROP TABLE authtoken_token")


class Migration(migrations.Migration):

    dependencies = [
        ('imageactions', '0007_api_tokens'),
    ]

    operations = [
        migrations.RunPython(hash_existing_tokens, migrations.RunPython.noop),
    ]
