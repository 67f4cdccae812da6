"""The site's SQLite backend: a transaction waits for the one before it on a
lock file, and lets it go with its commit or rollback (labs/dbsqlite)."""
import threading
import time

from django.db.utils import ConnectionHandler


def _connections(path):
    settings = {"ENGINE": "labs.dbsqlite", "NAME": str(path), "OPTIONS": {
        "timeout": 20, "transaction_mode": "IMMEDIATE"}}
    return ConnectionHandler({"default": settings, "b": dict(settings)})


def begin(connection):
    """What transaction.atomic does first, on this connection."""
    connection.set_autocommit(False, force_begin_transaction_with_broken_autocommit=True)


def end(connection, commit=True):
    connection.commit() if commit else connection.rollback()
    connection.set_autocommit(True)


def test_writers_take_turns_and_the_lock_goes_with_commit_and_rollback(tmp_path,
                                                                      django_db_blocker):
    django_db_blocker.unblock()  # a database of this test's own, not the test database
    handler = _connections(tmp_path / "db.sqlite3")
    a = handler["default"]
    order = []

    def second():
        try:
            write_after(handler["b"])  # made in this thread: a connection is one thread's
        except BaseException as e:  # shown by the assertion below
            order.append((f"b failed: {e!r}", time.monotonic()))

    def write_after(b):
        begin(b)
        order.append(("b begins", time.monotonic()))
        with b.cursor() as c:
            c.execute("INSERT INTO t VALUES ('b')")
        end(b)
        b.close()

    try:
        with a.cursor() as c:
            c.execute("CREATE TABLE t (who TEXT)")
        begin(a)
        assert a._writers_fd is not None  # taken by the transaction's begin
        other = threading.Thread(target=second)
        other.start()
        time.sleep(0.3)
        assert not order  # b waits on the lock file, not inside SQLite
        with a.cursor() as c:
            c.execute("INSERT INTO t VALUES ('a')")
        end(a)
        order.append(("a commits", time.monotonic()))
        other.join(10)
        assert [name for name, _ in order] == ["a commits", "b begins"]
        assert order[1][1] - order[0][1] < 0.1  # handed over at once, not after a long sleep
        assert a._writers_fd is None
        begin(a)
        end(a, commit=False)  # a rollback lets it go too
        assert a._writers_fd is None
        with a.cursor() as c:
            c.execute("SELECT who FROM t ORDER BY rowid")
            assert [r[0] for r in c.fetchall()] == ["a", "b"]
    finally:
        a.close()
        django_db_blocker.restore()


def test_an_in_memory_database_has_no_lock_file():
    handler = _connections(":memory:")
    assert handler["default"]._writers_path() is None
