# The copy of each image's store and key into its first location is 0005, and the removal of
# those columns 0006: on PostgreSQL, rows inserted in a migration leave deferred foreign-key
# checks that forbid altering the table later in the same transaction.

import django.db.models.deletion
import django.utils.timezone
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('imageactions', '0003_glance_images'),
    ]

    operations = [
        migrations.CreateModel(
            name='ImageLocation',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('store', models.CharField(max_length=64)),
                ('key', models.CharField(max_length=512)),
                ('created_by_action', models.UUIDField(blank=True, null=True)),
                ('created_at', models.DateTimeField(default=django.utils.timezone.now)),
                ('image', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='locations', to='imageactions.image')),
            ],
            options={
                'indexes': [models.Index(fields=['store', 'key'], name='image_location_object_idx')],
                'constraints': [
                    models.UniqueConstraint(fields=('image', 'store'), name='image_location_one_per_store'),
                    models.UniqueConstraint(fields=('created_by_action', 'store'), name='image_location_one_per_action'),
                ],
            },
        ),
    ]
