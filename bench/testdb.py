"""The benches' throw-away test database, dropped at the end even on PostgreSQL, where a gateway
served in the bench's own process leaves connections open in its executor's threads (each
lookup thread keeps one) and the drop would fail with "being accessed by other users"."""

from django.db import connection


def test_db_destroy(test_db: str) -> None:
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                           "WHERE datname = current_database() AND pid <> pg_backend_pid()")
    connection.creation.destroy_test_db(test_db, verbosity=0)
