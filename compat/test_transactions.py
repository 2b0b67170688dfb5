"""Transactions with real clients (confluent-kafka / librdkafka): commit and
abort, read_committed vs read_uncommitted consumers, offsets committed in a
transaction, fencing by a second producer, the broker aborting a transaction
left open past its timeout, and consume-transform-produce exactly once across
a kill -9 of the broker."""
import time

import pytest
from confluent_kafka import (Consumer, KafkaException, OFFSET_BEGINNING, Producer,
                             TopicPartition)

from conftest import Broker, create_topic

# Quick timeout checks, no first-join delay.
TXN_ARGS = ["--set", "transactions.abort_timed_out_interval_ms=200",
            "--set", "groups.initial_rebalance_delay_ms=0"]


@pytest.fixture
def tbroker():
    b = Broker(extra_args=TXN_ARGS)
    yield b
    b.close()


def txn_producer(broker, txn_id, **extra):
    conf = {"bootstrap.servers": broker.bootstrap, "transactional.id": txn_id,
            "linger.ms": 5, "transaction.timeout.ms": 60000}
    conf.update(extra)
    p = Producer(conf)
    p.init_transactions(30)
    return p


def read_all(broker, topic, isolation, partitions=1, expect=None, timeout=30, group=None):
    """Every value readable from the start, per partition order kept."""
    c = Consumer({"bootstrap.servers": broker.bootstrap,
                  "group.id": group or f"reader-{isolation}-{time.monotonic_ns()}",
                  "isolation.level": isolation, "enable.auto.commit": False,
                  "enable.partition.eof": True})
    c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
    got, eof = [], set()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        m = c.poll(0.3)
        if m is None:
            continue
        if m.error():
            if m.error().code() == -191:  # _PARTITION_EOF
                eof.add(m.partition())
                if len(eof) == partitions and (expect is None or len(got) >= expect):
                    break
                continue
            raise AssertionError(m.error())
        got.append(m.value().decode())
    c.close()
    return got


def test_commit_and_abort_are_seen_by_isolation_level(tbroker, topic_name):
    create_topic(tbroker, topic_name, 1)
    p = txn_producer(tbroker, "tx-basic")
    p.begin_transaction()
    for i in range(5):
        p.produce(topic_name, value=f"c1-{i}")
    p.commit_transaction(30)
    p.begin_transaction()
    for i in range(5):
        p.produce(topic_name, value=f"a-{i}")
    p.flush(30)
    p.abort_transaction(30)
    p.begin_transaction()
    for i in range(5):
        p.produce(topic_name, value=f"c2-{i}")
    p.commit_transaction(30)

    committed = read_all(tbroker, topic_name, "read_committed", expect=10)
    assert committed == [f"c1-{i}" for i in range(5)] + [f"c2-{i}" for i in range(5)]
    everything = read_all(tbroker, topic_name, "read_uncommitted", expect=15)
    assert everything == ([f"c1-{i}" for i in range(5)] + [f"a-{i}" for i in range(5)]
                          + [f"c2-{i}" for i in range(5)])


def test_read_committed_waits_for_an_open_transaction(tbroker, topic_name):
    create_topic(tbroker, topic_name, 1)
    plain = Producer({"bootstrap.servers": tbroker.bootstrap})
    plain.produce(topic_name, value="before")
    plain.flush(30)
    p = txn_producer(tbroker, "tx-open")
    p.begin_transaction()
    p.produce(topic_name, value="pending")
    p.flush(30)
    plain.produce(topic_name, value="after")
    plain.flush(30)
    # The open transaction holds the last stable offset back: "after" waits too.
    assert read_all(tbroker, topic_name, "read_committed", timeout=5) == ["before"]
    assert read_all(tbroker, topic_name, "read_uncommitted", expect=3) == [
        "before", "pending", "after"]
    p.commit_transaction(30)
    assert read_all(tbroker, topic_name, "read_committed", expect=3) == [
        "before", "pending", "after"]


def committed_offset(broker, group, topic):
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group,
                  "isolation.level": "read_committed"})
    got = c.committed([TopicPartition(topic, 0)], timeout=30)
    c.close()
    return got[0].offset


def test_offsets_sent_in_a_transaction_commit_with_it(tbroker, topic_name):
    create_topic(tbroker, topic_name, 1)
    out = topic_name + "-out"
    create_topic(tbroker, out, 1)
    group = "g-" + topic_name
    c = Consumer({"bootstrap.servers": tbroker.bootstrap, "group.id": group})
    p = txn_producer(tbroker, "tx-offsets")
    # Aborted: the offsets stay unset.
    p.begin_transaction()
    p.produce(out, value="x")
    p.send_offsets_to_transaction([TopicPartition(topic_name, 0, 7)],
                                  c.consumer_group_metadata(), 30)
    p.abort_transaction(30)
    assert committed_offset(tbroker, group, topic_name) < 0
    # Committed: visible with the output.
    p.begin_transaction()
    p.produce(out, value="y")
    p.send_offsets_to_transaction([TopicPartition(topic_name, 0, 42)],
                                  c.consumer_group_metadata(), 30)
    p.commit_transaction(30)
    assert committed_offset(tbroker, group, topic_name) == 42
    assert read_all(tbroker, out, "read_committed", expect=1) == ["y"]
    c.close()
    # The broker's state survives a restart: offsets and the aborted range.
    tbroker.restart(same_port=True)
    assert committed_offset(tbroker, group, topic_name) == 42
    assert read_all(tbroker, out, "read_committed", expect=1) == ["y"]


def test_a_second_producer_fences_the_first(tbroker, topic_name):
    create_topic(tbroker, topic_name, 1)
    first = txn_producer(tbroker, "tx-fence")
    first.begin_transaction()
    first.produce(topic_name, value="zombie")
    first.flush(30)
    second = txn_producer(tbroker, "tx-fence")  # aborts the first's transaction
    second.begin_transaction()
    second.produce(topic_name, value="winner")
    second.commit_transaction(30)
    with pytest.raises(KafkaException) as failed:
        first.produce(topic_name, value="late")
        first.commit_transaction(30)
    assert failed.value.args[0].fatal(), failed.value.args[0]
    assert read_all(tbroker, topic_name, "read_committed", expect=1) == ["winner"]


def test_a_transaction_open_past_its_timeout_is_aborted(tbroker, topic_name):
    create_topic(tbroker, topic_name, 1)
    p = txn_producer(tbroker, "tx-timeout", **{"transaction.timeout.ms": 2000})
    p.begin_transaction()
    p.produce(topic_name, value="abandoned")
    p.flush(30)
    deadline = time.monotonic() + 30
    state = None
    while time.monotonic() < deadline:
        out = tbroker.veil("transactions", "--bootstrap", tbroker.bootstrap, "describe",
                           "tx-timeout").stdout
        state = out
        if "CompleteAbort" in out:
            break
        time.sleep(0.3)
    assert "CompleteAbort" in state, state
    # Nothing is pending: read_committed consumers move past it.
    plain = Producer({"bootstrap.servers": tbroker.bootstrap})
    plain.produce(topic_name, value="next")
    plain.flush(30)
    assert read_all(tbroker, topic_name, "read_committed", expect=1) == ["next"]
    # The abandoned producer was fenced by the abort's epoch bump.
    with pytest.raises(KafkaException):
        p.commit_transaction(10)


def test_consume_transform_produce_is_exactly_once_across_kill_9(tbroker, topic_name):
    """N numbered inputs → N doubled outputs, each once and in order, with the
    group's offset at N, though the broker is killed -9 mid-way."""
    n = 400
    create_topic(tbroker, topic_name, 1)
    out = topic_name + "-out"
    create_topic(tbroker, out, 1)
    src = Producer({"bootstrap.servers": tbroker.bootstrap, "enable.idempotence": True})
    for i in range(n):
        src.produce(topic_name, key=str(i % 4), value=str(i))
    assert src.flush(30) == 0
    group = "g-ctp"
    killed = False
    done = 0
    deadline = time.monotonic() + 180
    while done < n and time.monotonic() < deadline:
        c = Consumer({"bootstrap.servers": tbroker.bootstrap, "group.id": group,
                      "isolation.level": "read_committed", "enable.auto.commit": False,
                      "auto.offset.reset": "earliest"})
        c.subscribe([topic_name])
        p = Producer({"bootstrap.servers": tbroker.bootstrap, "transactional.id": "tx-ctp",
                      "transaction.timeout.ms": 10000})
        try:
            p.init_transactions(60)
            while done < n and time.monotonic() < deadline:
                batch = c.consume(20, 1.0)
                batch = [m for m in batch if m.error() is None]
                if not batch:
                    continue
                p.begin_transaction()
                for m in batch:
                    p.produce(out, key=m.key(), value=str(int(m.value()) * 2))
                offsets = [TopicPartition(topic_name, 0, batch[-1].offset() + 1)]
                if not killed and done >= n // 3:
                    # Crash with this transaction open: it must not survive half-done.
                    p.flush(30)
                    killed = True
                    tbroker.kill()
                    tbroker.start(same_port=True)
                    raise KafkaException("broker killed")
                p.send_offsets_to_transaction(offsets, c.consumer_group_metadata(), 60)
                p.commit_transaction(60)
                done = batch[-1].offset() + 1
        except KafkaException:
            pass
        finally:
            c.close()
            del p
        # Resume from what the group committed.
        committed = committed_offset(tbroker, group, topic_name)
        done = max(committed, 0)
    assert killed, "the broker was never killed"
    assert committed_offset(tbroker, group, topic_name) == n
    got = read_all(tbroker, out, "read_committed", expect=n, timeout=60)
    assert got == [str(i * 2) for i in range(n)], (len(got), got[:10])


def test_a_topic_deleted_mid_transaction_leaves_nothing_stuck(tbroker, topic_name):
    """The transaction writes to two topics; one is deleted before the
    commit. The commit completes (no marker is owed to a deleted topic), the
    other topic's records are committed, and its last stable offset moves
    on; the transactional id takes its next transaction."""
    from confluent_kafka.admin import AdminClient

    gone = topic_name + "-gone"
    create_topic(tbroker, topic_name, 1)
    create_topic(tbroker, gone, 1)
    p = txn_producer(tbroker, "tx-deleted")
    p.begin_transaction()
    p.produce(topic_name, value="kept")
    p.produce(gone, value="lost")
    p.flush(30)
    admin = AdminClient({"bootstrap.servers": tbroker.bootstrap})
    admin.delete_topics([gone])[gone].result(30)
    try:
        p.commit_transaction(30)
    except Exception:  # the client may see the deleted partition fail; then abort
        p.abort_transaction(30)
    deadline = time.monotonic() + 30
    while "Complete" not in tbroker.veil("transactions", "--bootstrap", tbroker.bootstrap,
                                         "describe", "tx-deleted").stdout:
        assert time.monotonic() < deadline, "the transaction never completed"
        time.sleep(0.3)
    p.begin_transaction()
    p.produce(topic_name, value="next")
    p.commit_transaction(30)
    got = read_all(tbroker, topic_name, "read_committed", expect=1)
    assert got[-1] == "next" and got in (["kept", "next"], ["next"]), got


def test_an_operator_lists_and_aborts_an_open_transaction(tbroker, topic_name):
    create_topic(tbroker, topic_name, 1)
    p = txn_producer(tbroker, "tx-operator")
    p.begin_transaction()
    p.produce(topic_name, value="hanging")
    p.flush(30)
    listed = tbroker.veil("transactions", "--bootstrap", tbroker.bootstrap, "list",
                          "--state", "Ongoing").stdout
    assert "tx-operator" in listed, listed
    bad = tbroker.veil("transactions", "--bootstrap", tbroker.bootstrap, "list",
                       "--state", "Sleeping", check=False)
    assert bad.returncode != 0 and "Sleeping" in bad.stderr, bad.stderr
    described = tbroker.veil("transactions", "--bootstrap", tbroker.bootstrap, "describe",
                             "tx-operator").stdout
    assert f"{topic_name}-0" in described and "Ongoing" in described, described
    tbroker.veil("transactions", "--bootstrap", tbroker.bootstrap, "abort", "tx-operator")
    deadline = time.monotonic() + 30
    while "CompleteAbort" not in tbroker.veil("transactions", "--bootstrap", tbroker.bootstrap,
                                              "describe", "tx-operator").stdout:
        assert time.monotonic() < deadline, "the abort never completed"
        time.sleep(0.3)
    again = tbroker.veil("transactions", "--bootstrap", tbroker.bootstrap, "abort",
                         "tx-operator", check=False)
    assert again.returncode != 0 and "no open transaction" in again.stderr, again.stderr
    with pytest.raises(KafkaException):
        p.commit_transaction(10)
    plain = Producer({"bootstrap.servers": tbroker.bootstrap})
    plain.produce(topic_name, value="after")
    plain.flush(30)
    assert read_all(tbroker, topic_name, "read_committed", expect=1) == ["after"]
