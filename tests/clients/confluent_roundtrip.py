"""confluent-kafka (Python) against a Kafka bootstrap, for tests/clients.rs.

    python confluent_roundtrip.py BOOTSTRAP TOPIC [RECORDS]

Creates TOPIC (3 partitions) with the admin client, reads the cluster metadata, produces
RECORDS keyed records (default 500) and reads them back from the beginning with a fresh
consumer group, then commits and reads the committed offsets back. Prints one JSON line on
stdout with what it saw; the Rust test judges it. Diagnostics go to stderr.
"""

import json
import sys
import time

import confluent_kafka
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

PARTITIONS = 3


def record(i):
    # 37 keys, so each partition holds several keys and each key many records; the value
    # carries the production index and some non-ASCII text.
    return f"key-{i % 37}", f"value-{i}-电话"


def main():
    bootstrap, topic = sys.argv[1], sys.argv[2]
    n = int(sys.argv[3]) if len(sys.argv) > 3 else 500
    out = {
        "client": f"confluent-kafka {confluent_kafka.__version__}",
        "librdkafka": confluent_kafka.libversion()[0],
        "errors": [],
    }
    errors = out["errors"]

    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics(
        [NewTopic(topic, num_partitions=PARTITIONS, replication_factor=1)],
        operation_timeout=10,
    )
    futures[topic].result(timeout=15)
    md = admin.list_topics(timeout=10)
    out["metadata_topics"] = sorted(md.topics)
    t = md.topics.get(topic)
    out["metadata_partitions"] = len(t.partitions) if t is not None else 0

    produced = []

    def on_delivery(err, msg):
        if err is not None:
            errors.append(f"delivery: {err}")
        else:
            produced.append(
                [msg.partition(), msg.offset(), msg.key().decode(), msg.value().decode()]
            )

    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "acks": "all"})
    started = time.monotonic()
    for i in range(n):
        key, value = record(i)
        producer.produce(topic, key=key.encode(), value=value.encode(), on_delivery=on_delivery)
        producer.poll(0)
    left = producer.flush(20)
    if left:
        errors.append(f"{left} records not delivered after 20 s")
    out["produce_s"] = round(time.monotonic() - started, 3)
    # The order the client handed records over, as (key, value), for the test to compare.
    out["sent"] = [list(record(i)) for i in range(n)]
    out["produced"] = produced

    group = f"{topic}-group"
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    consumed = []
    started = time.monotonic()
    deadline = started + 30
    quiet_until = None
    # Read until every delivered record is back, then half a second more to catch extras.
    while time.monotonic() < deadline:
        if len(consumed) >= len(produced):
            quiet_until = quiet_until or time.monotonic() + 0.5
            if time.monotonic() >= quiet_until:
                break
        m = consumer.poll(0.1)
        if m is None:
            continue
        if m.error():
            if m.error().code() != KafkaError._PARTITION_EOF:
                errors.append(f"consume: {m.error()}")
            continue
        consumed.append([m.partition(), m.offset(), m.key().decode(), m.value().decode()])
    out["consume_s"] = round(time.monotonic() - started, 3)
    out["consumed"] = consumed

    try:
        consumer.commit(asynchronous=False)
        committed = consumer.committed(
            [TopicPartition(topic, p) for p in range(PARTITIONS)], timeout=10
        )
        out["committed"] = {str(tp.partition): tp.offset for tp in committed}
    except Exception as e:  # reported, not raised: the test prints it
        errors.append(f"commit: {e}")
    consumer.close()

    print(json.dumps(out, ensure_ascii=False), flush=True)


if __name__ == "__main__":
    main()
