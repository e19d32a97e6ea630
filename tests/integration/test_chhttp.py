"""The chdb-backed ClickHouse HTTP server, driven by clickhouse-connect against the real engine."""

from __future__ import annotations

import base64
import gzip
import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import clickhouse_connect
import lz4.frame  # type: ignore[import-untyped]
import pyarrow as pa
import pytest
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import DatabaseError
from iceberg_offload.local.chhttp import ClickHouseHTTPServer

PASSWORD = "s3cret"
BASE = datetime(2024, 3, 1, tzinfo=UTC)
COLUMNS = ["ts", "n", "sym", "side", "px", "note"]
DDL = """CREATE TABLE {name} (
    ts DateTime64(3, 'UTC'), n UInt64, sym LowCardinality(String), side Enum8('buy' = 1, 'sell' = 2),
    px Decimal(18, 8), note Nullable(String)
) ENGINE = MergeTree ORDER BY n"""


def row(i: int) -> tuple[Any, ...]:
    ts = BASE + timedelta(milliseconds=1500 * i + i % 1000)
    note = None if i % 3 == 0 else f"note {i} \t'\"\\"
    return ts, i, f"sym{i % 7}", ("buy", "sell")[i % 2], Decimal(i) / 8 - Decimal("0.00000001"), note


def arrow_rows(rows: list[tuple[Any, ...]]) -> pa.Table:
    ts, n, sym, side, px, note = zip(*rows, strict=True)
    return pa.table(
        {
            "ts": pa.array(ts, pa.timestamp("ms", tz="UTC")),
            "n": pa.array(n, pa.uint64()),
            "sym": pa.array(sym),
            "side": pa.array(side),
            "px": pa.array(px, pa.decimal128(18, 8)),
            "note": pa.array(note, pa.string()),
        }
    )


def client_for(port: int, **kwargs: Any) -> Client:
    return clickhouse_connect.get_client(host="127.0.0.1", port=port, username="default", password=PASSWORD, **kwargs)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClickHouseHTTPServer]:
    # One engine per process: chdb binds a process to a single data directory.
    with ClickHouseHTTPServer(tmp_path_factory.mktemp("chdb"), password=PASSWORD) as srv:
        yield srv


@pytest.fixture
def client(server: ClickHouseHTTPServer) -> Iterator[Client]:
    client = client_for(server.port)
    yield client
    client.close()


def raw_request(
    server: ClickHouseHTTPServer, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    auth = {"X-ClickHouse-User": "default", "X-ClickHouse-Key": PASSWORD}
    conn.request(method, path, body=body, headers={**auth, **(headers or {})})
    response = conn.getresponse()
    result = response.status, dict(response.getheaders()), response.read()
    conn.close()
    return result


def test_types_round_trip_through_every_read_and_write_path(client: Client) -> None:
    client.command(DDL.format(name="trades"))
    expected = [row(i) for i in range(5000)]
    summary = client.insert_arrow("trades", arrow_rows(expected[:3000]))
    assert summary.written_rows == 3000
    # Small blocks: the Native body arrives chunked, as back-to-back lz4 frames.
    context = client.create_insert_context("trades", column_names=COLUMNS)
    context.req_block_size = 300
    context.data = [list(r) for r in expected[3000:]]
    assert client.insert(context=context).written_rows == 2000

    result = client.query("SELECT * FROM trades ORDER BY n")
    assert result.column_names == tuple(COLUMNS)
    assert result.result_rows == [(r[0].replace(tzinfo=None), *r[1:]) for r in expected]

    arrow = client.query_arrow("SELECT * FROM trades ORDER BY n")
    assert arrow.num_rows == 5000
    assert arrow.column("ts").to_pylist() == [r[0] for r in expected]
    assert arrow.column("px").to_pylist() == [r[4] for r in expected]
    assert arrow.column("side").to_pylist() == [1 + i % 2 for i in range(5000)]  # Arrow carries Enum8 codes
    assert arrow.column("note").to_pylist() == [r[5] for r in expected]

    with client.query_arrow_stream("SELECT n, sym FROM trades ORDER BY n") as stream:
        streamed = pa.Table.from_batches(list(stream))
    assert streamed.column("n").to_pylist() == list(range(5000))
    assert streamed.column("sym").to_pylist() == [r[2] for r in expected]

    lo = BASE + timedelta(seconds=3000)
    counted = client.query(
        "SELECT count(), min(n) FROM trades WHERE ts >= {lo:DateTime64(3)} AND sym = {sym:String}",
        parameters={"lo": lo, "sym": "sym3"},
    )
    matching = [r for r in expected if r[0] >= lo and r[2] == "sym3"]
    assert counted.result_rows == [(len(matching), min(r[1] for r in matching))]


def test_streamed_results_and_their_failures(client: Client) -> None:
    with client.query_row_block_stream("SELECT number FROM numbers(1000000)") as blocks:
        assert sum(len(block) for block in blocks) == 1_000_000
    # An error after the 200 went out must not pass for a shorter, complete result.
    with (
        pytest.raises(DatabaseError, match="boom"),
        client.query_row_block_stream("SELECT throwIf(number = 900000, 'boom') FROM numbers(1000000)") as blocks,
    ):
        sum(len(block) for block in blocks)
    assert client.command("SELECT 1") == 1


def test_sessions_keep_their_settings_apart(server: ClickHouseHTTPServer) -> None:
    first, second = client_for(server.port), client_for(server.port)
    first.command("SET max_threads = 3")
    second.command("SET max_threads = 5")
    setting = "SELECT getSetting('max_threads')"
    assert (first.command(setting), second.command(setting)) == (3, 5)
    # A per-query setting lasts one query, as on a real server.
    assert first.command("SELECT getSetting('max_block_size')", settings={"max_block_size": 777}) == 777
    assert first.command("SELECT getSetting('max_block_size')") != 777
    assert first.command(setting) == 3
    default = client_for(server.port, autogenerate_session_id=False)
    default.command("SET max_threads = 1")  # no session: the SET dies with its request
    assert default.command(setting) not in (1, 3, 5)


def test_concurrent_clients(server: ClickHouseHTTPServer) -> None:
    failures: list[BaseException] = []

    def work(i: int) -> None:
        try:
            client = client_for(server.port, autogenerate_session_id=i % 2 == 0)
            for _ in range(10):
                assert client.command("SELECT sum(number) FROM numbers(100000)") == 4999950000
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []


def test_query_errors_carry_the_engine_code_and_message(client: Client) -> None:
    with pytest.raises(DatabaseError, match=r"Code: 60\..*Unknown table expression identifier 'no_such_table'") as err:
        client.query("SELECT * FROM no_such_table")
    assert err.value.code == 60
    with pytest.raises(DatabaseError, match=r"Code: 47\..*Unknown expression identifier `nope`") as err:
        client.query("SELECT nope FROM system.one")
    assert err.value.code == 47
    with pytest.raises(DatabaseError, match=r"Code: 60\..*no_such_table"):
        client.insert("no_such_table", [[1]], column_names=["a"], column_type_names=["UInt8"])
    assert client.command("SELECT 41 + 1") == 42


def test_wrong_password_is_rejected(server: ClickHouseHTTPServer) -> None:
    with pytest.raises(DatabaseError, match="Authentication failed") as err:
        clickhouse_connect.get_client(host="127.0.0.1", port=server.port, username="default", password="wrong")
    assert err.value.code == 516
    status, headers, body = raw_request(server, "GET", "/?query=SELECT+1", headers={"X-ClickHouse-Key": "wrong"})
    assert (status, headers["X-ClickHouse-Exception-Code"]) == (403, "516")
    assert body.startswith(b"Code: 516. DB::Exception: default: Authentication failed")
    basic = "Basic " + base64.b64encode(f"default:{PASSWORD}".encode()).decode()
    assert raw_request(server, "GET", "/?query=SELECT+1", headers={"Authorization": basic})[::2] == (200, b"1\n")


def test_raw_http_bodies(server: ClickHouseHTTPServer) -> None:
    assert raw_request(server, "GET", "/ping")[::2] == (200, b"Ok.\n")
    raw_request(server, "POST", "/", b"CREATE TABLE raw (a UInt8, b String) ENGINE = Memory")
    frames = lz4.frame.compress(b"INSERT INTO raw FORMAT TSV\n1\ta\n") + lz4.frame.compress(b"2\tb\n")
    pieces = iter([frames[:7], frames[7:30], frames[30:]])  # chunk boundaries inside frames
    status, headers, _ = raw_request(server, "POST", "/", pieces, {"Content-Encoding": "lz4"})
    assert status == 200
    assert json.loads(headers["X-ClickHouse-Summary"])["written_rows"] == "2"
    gzipped = gzip.compress(b"3\tc\n")  # the statement in the URL, the data in the body
    insert = "/?query=INSERT+INTO+raw+FORMAT+TSV"
    status, _, _ = raw_request(server, "POST", insert, gzipped, {"Content-Encoding": "gzip"})
    assert status == 200
    status, headers, body = raw_request(server, "GET", "/?query=SELECT+*+FROM+raw+ORDER+BY+a&database=default")
    assert (status, body) == (200, b"1\ta\n2\tb\n3\tc\n")
    assert headers["X-ClickHouse-Format"] == "TabSeparated"
    status, _, body = raw_request(server, "POST", "/?query=SELECT+{x:String}&param_x=a%5Ctb")
    assert (status, body) == (200, b"a\\tb\n")


def test_long_parameters_use_form_encoding(client: Client) -> None:
    names = [f"name-{i}" for i in range(2000)]  # too long for the URL, so query() sends a multipart form
    result = client.query(
        "SELECT length({names:Array(String)}), {names:Array(String)}[2000]", parameters={"names": names}
    )
    assert result.result_rows == [(2000, "name-1999")]


def test_another_process_reads_what_this_one_inserted(server: ClickHouseHTTPServer, client: Client) -> None:
    client.command("CREATE TABLE shared (n UInt64) ENGINE = MergeTree ORDER BY n")
    client.insert("shared", [[i] for i in range(1234)], column_names=["n"])
    script = (
        "import clickhouse_connect, sys\n"
        "c = clickhouse_connect.get_client(host='127.0.0.1', port=int(sys.argv[1]), password=sys.argv[2])\n"
        "print(c.query('SELECT count(), sum(n) FROM shared').result_rows[0])\n"
        "c.insert('shared', [[10_000]], column_names=['n'])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(server.port), PASSWORD], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"({1234}, {sum(range(1234))})"
    assert client.command("SELECT max(n) FROM shared") == 10_000


def test_second_process_on_the_same_directory_fails_clearly(server: ClickHouseHTTPServer) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "iceberg_offload.local.chhttp", "--path", str(server.data_dir), "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert f"chdb data directory {server.data_dir} is owned by another process" in done.stderr


def test_command_line_serves_until_sigterm(tmp_path: Path) -> None:
    port_file = tmp_path / "port"
    command = [sys.executable, "-m", "iceberg_offload.local.chhttp", "--path", str(tmp_path / "ch")]
    process = subprocess.Popen([*command, "--port", "0", "--port-file", str(port_file)], stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while not port_file.exists():
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            assert time.monotonic() < deadline, "the server never wrote its port"
            time.sleep(0.05)
        client = clickhouse_connect.get_client(host="127.0.0.1", port=int(port_file.read_text()))
        client.command("CREATE TABLE t (a UInt8) ENGINE = MergeTree ORDER BY a")
        client.insert("t", [[1], [2]], column_names=["a"])
        assert client.command("SELECT sum(a) FROM t") == 3
        client.close()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
            process.wait()
        if process.stderr:
            process.stderr.close()
    assert not port_file.exists()
