"""Migrations: a database brought to the newest one has the tables and indexes schema.py declares."""
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from modelyard.settings import Settings
from modelyard.store.migrate import upgrade
from modelyard.store.schema import metadata


def _for_this_dialect(dialect: str):
    """Leave out what schema.py declares for the other database only (``Index(...).ddl_if``)."""
    def include(obj, name, type_, reflected, compare_to):
        only = getattr(obj, "_ddl_if", None)
        return only is None or only.dialect in (None, dialect)
    return include


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_migrations_build_exactly_the_tables_and_indexes_of_schema_py(tmp_path, request, backend):
    url = f"sqlite:///{tmp_path / 'migrated.db'}"
    if backend == "postgres":
        url = Settings(database_url=request.getfixturevalue("pg_database")()).resolved_database_url
    engine = sa.create_engine(url)
    try:
        upgrade(engine)
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"include_object": _for_this_dialect(conn.dialect.name)})
            differences = compare_metadata(context, metadata)
    finally:
        engine.dispose()
    assert differences == []


@pytest.mark.parametrize("table", ["params", "tags"])
def test_postgresql_estimates_a_value_filter_on_the_value_index_without_a_threefold_underestimate(request, table):
    """The value indexes hold values of up to 256 characters, so a filter says ``length(value) <= 256``;
    without migration 0010's statistics PostgreSQL guessed a third of the rows pass that, and chose
    to join every run of an experiment instead of walking a metric's index."""
    url = Settings(database_url=request.getfixturevalue("pg_database")()).resolved_database_url
    engine = sa.create_engine(url)
    try:
        upgrade(engine)
        with engine.begin() as conn:
            conn.execute(sa.text(f"INSERT INTO {table} (run_uuid, key, value) SELECT md5(i::text), 'lr', "
                                 "(ARRAY['0.1', '0.01', '0.001'])[i % 3 + 1] FROM generate_series(1, 6000) AS i"))
            conn.execute(sa.text(f"ANALYZE {table}"))
            plan = conn.execute(sa.text(
                f"EXPLAIN (FORMAT JSON) SELECT run_uuid FROM {table} "
                "WHERE key = 'lr' AND value = '0.01' AND length(value) <= 256")).scalar()
    finally:
        engine.dispose()
    estimated = plan[0]["Plan"]["Plan Rows"]
    assert 1500 <= estimated <= 3000, plan  # 2,000 rows hold the value
