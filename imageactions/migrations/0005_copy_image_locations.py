from django.db import migrations


def copy_locations(apps, schema_editor):
    """Each image's one store and key become its first location."""
    Image = apps.get_model("imageactions", "Image")
    ImageLocation = apps.get_model("imageactions", "ImageLocation")
    images = Image.objects.exclude(store="").only("id", "store", "store_key", "created_by_action", "created_at")
    ImageLocation.objects.bulk_create(
        (
            ImageLocation(
                image_id=image.id,
                store=image.store,
                key=image.store_key,
                created_by_action=image.created_by_action,
                created_at=image.created_at,
            )
            for image in images.iterator(chunk_size=1000)
        ),
        batch_size=1000,
    )


class Migration(migrations.Migration):

    dependencies = [
        ('imageactions', '0004_image_locations'),
    ]

    operations = [
        migrations.RunPython(copy_locations, migrations.RunPython.noop),
    ]
