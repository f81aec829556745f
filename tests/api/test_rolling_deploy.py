"""A rolling deploy: while the release before still runs beside this one, its processes insert
actions without the columns this release added. The database fills those in itself."""

from django.db import connection
from django.db.models import NOT_PROVIDED

from imageactions.models import ImageAction

# Columns added after the first release that the code before them never wrote.
ADDED_COLUMNS = {"request_id": "", "labels": {}, "error_code": "", "error_details": {}, "notify_url": ""}


def test_an_action_inserted_without_the_newer_columns_gets_their_defaults(db):
    action = ImageAction(action_type="import", owner="project-a")
    older = [
        field
        for field in ImageAction._meta.concrete_fields
        if field.name not in ADDED_COLUMNS and field.db_default is NOT_PROVIDED
    ]
    values = [field.get_db_prep_save(field.pre_save(action, add=True), connection) for field in older]
    table, quote = ImageAction._meta.db_table, connection.ops.quote_name
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {quote(table)} ({', '.join(quote(f.column) for f in older)}) "
            f"VALUES ({', '.join(['%s'] * len(older))})",
            values,
        )
    inserted = ImageAction.objects.get(pk=action.pk)
    assert {name: getattr(inserted, name) for name in ADDED_COLUMNS} == ADDED_COLUMNS
