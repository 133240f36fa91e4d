import secrets

from django.db import migrations, models

import deployments.models

BATCH = 500


def give_each_deployment_its_own_token(apps, schema_editor):
    # AddField calls the default once: every existing row got one and the same value.
    Deployment = apps.get_model("deployments", "Deployment")
    rows = list(Deployment.objects.only("pk"))
    for row in rows:
        row.upstream_token = secrets.token_urlsafe(32)
    Deployment.objects.bulk_update(rows, ["upstream_token"], batch_size=BATCH)


class Migration(migrations.Migration):

    dependencies = [
        ('deployments', '0007_job_resources'),
    ]

    operations = [
        migrations.AddField(
            model_name='deployment',
            name='upstream_token',
            field=models.CharField(default=deployments.models.new_upstream_token, editable=False, max_length=64),
        ),
        migrations.RunPython(give_each_deployment_its_own_token, migrations.RunPython.noop, elidable=True),
    ]
