"""On PostgreSQL, every change of what the gateway reads of a deployment or of its endpoint
tokens sends that deployment's id on the `hub_gateway` channel, at commit: gateway processes
drop what they kept of it (deployments/target_cache.py). Triggers, not code in each write,
so no write path (a transition, the reconciler, the admin, a plain UPDATE) can forget it.
The activity counters the gateway writes every second change none of these columns.
SQLite has no channels: there the gateway keeps nothing, and this does nothing."""

from django.db import migrations

# What deployments.gateway.live_targets reads of a deployment (and where it runs).
WATCHED = ("handle", "version_id", "node_id", "state", "endpoint", "upstream_token", "sleep_started_at", "deleted_at")

CREATE = f"""
CREATE FUNCTION hub_gateway_deployment_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM pg_notify('hub_gateway', OLD.id::text);
    ELSIF ({", ".join(f"OLD.{column}" for column in WATCHED)})
          IS DISTINCT FROM ({", ".join(f"NEW.{column}" for column in WATCHED)}) THEN
        PERFORM pg_notify('hub_gateway', NEW.id::text);
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER hub_gateway_deployment_changed AFTER UPDATE OR DELETE ON deployments_deployment
    FOR EACH ROW EXECUTE FUNCTION hub_gateway_deployment_changed();

CREATE FUNCTION hub_gateway_token_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('hub_gateway', OLD.deployment_id::text);
    IF TG_OP = 'UPDATE' AND NEW.deployment_id IS DISTINCT FROM OLD.deployment_id THEN
        PERFORM pg_notify('hub_gateway', NEW.deployment_id::text);
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER hub_gateway_token_changed AFTER UPDATE OR DELETE ON deployments_endpointtoken
    FOR EACH ROW EXECUTE FUNCTION hub_gateway_token_changed();
"""

DROP = """
DROP TRIGGER IF EXISTS hub_gateway_token_changed ON deployments_endpointtoken;
DROP FUNCTION IF EXISTS hub_gateway_token_changed();
DROP TRIGGER IF EXISTS hub_gateway_deployment_changed ON deployments_deployment;
DROP FUNCTION IF EXISTS hub_gateway_deployment_changed();
"""


def on_postgresql(sql: str):
    def run(apps, schema_editor):
        if schema_editor.connection.vendor == "postgresql":
            schema_editor.execute(sql)

    return run


class Migration(migrations.Migration):
    dependencies = [("deployments", "0008_deployment_upstream_token")]

    operations = [migrations.RunPython(on_postgresql(CREATE), on_postgresql(DROP))]
