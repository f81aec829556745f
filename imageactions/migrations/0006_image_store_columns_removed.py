from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ('imageactions', '0005_copy_image_locations'),
    ]

    operations = [
        migrations.RemoveConstraint(
            model_name='image',
            name='image_one_per_action_store',
        ),
        migrations.RemoveField(
            model_name='image',
            name='store',
        ),
        migrations.RemoveField(
            model_name='image',
            name='store_key',
        ),
    ]
