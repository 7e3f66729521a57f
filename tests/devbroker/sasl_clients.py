#!/usr/bin/python3
"""A Kafka client with SASL against the dev broker: kafka-python (python3-kafka) or confluent-kafka-python
(python3-confluent-kafka), two implementations independent of each other and of the broker.

Produces COUNT keyed messages (binary values among them) to partition 0 of TOPIC, reads partition 0 back from
the beginning and compares every key and value. Exits 0 and prints "OK: N messages" on a byte-exact match;
4 and prints "AUTH ERROR: <what the client reported>" when the client reports an authentication failure;
1 on a mismatch or another error; 3 when the overall time limit is reached.
"""
import argparse
import logging
import signal
import sys
import time


def expected(count):
    return [(b"k%d" % i, b"v%d-" % i + bytes(range(i % 256))) for i in range(count)]


def on_alarm(signum, frame):
    print("sasl_clients: overall time limit reached", file=sys.stderr)
    sys.exit(3)


def kafka_python(args, want):
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition
    from kafka.errors import NoBrokersAvailable

    # kafka.conn logs why a connection failed: that is what a user of kafka-python sees.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    conf = dict(bootstrap_servers=args.bootstrap, security_protocol=args.protocol, sasl_mechanism=args.mechanism,
                sasl_plain_username=args.user, sasl_plain_password=args.password,
                api_version_auto_timeout_ms=5000, request_timeout_ms=10000)
    if args.ca:
        conf["ssl_cafile"] = args.ca
    try:
        producer = KafkaProducer(acks=1, **conf)
    except NoBrokersAvailable as e:
        print("AUTH ERROR: %s" % type(e).__name__)
        return 4
    for k, v in want:
        producer.send(args.topic, key=k, value=v, partition=0)
    producer.flush(15)
    producer.close()
    consumer = KafkaConsumer(group_id=None, consumer_timeout_ms=5000, **conf)
    consumer.assign([TopicPartition(args.topic, 0)])
    consumer.seek_to_beginning()
    got = []
    for m in consumer:
        got.append((m.key, m.value))
        if len(got) == len(want):
            break
    consumer.close()
    return got


def confluent(args, want):
    from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

    conf = {"bootstrap.servers": args.bootstrap, "security.protocol": args.protocol,
            "sasl.mechanisms": args.mechanism, "sasl.username": args.user, "sasl.password": args.password}
    if args.ca:
        conf["ssl.ca.location"] = args.ca
    auth_errors = []

    def on_error(err):
        if err.code() == KafkaError._AUTHENTICATION:
            auth_errors.append(err.str())

    producer = Producer(dict(conf, **{"linger.ms": 5, "error_cb": on_error, "message.timeout.ms": 10000}))
    failed = []
    for k, v in want:
        producer.produce(args.topic, key=k, value=v, partition=0,
                         on_delivery=lambda err, msg: failed.append(str(err)) if err else None)
        producer.poll(0)
        if auth_errors:
            break
    # Delivery, or the authentication error, whichever comes first.
    deadline = time.monotonic() + 12
    left = len(producer)
    while left and not auth_errors and time.monotonic() < deadline:
        left = producer.flush(0.2)
    if auth_errors:
        print("AUTH ERROR: %s" % auth_errors[0])
        return 4
    if left or failed:
        print("produce: %d undelivered, %d failed (first: %s)" % (left, len(failed), failed[:1]), file=sys.stderr)
        return 1
    consumer = Consumer(dict(conf, **{"group.id": "sasl-clients", "enable.auto.commit": False,
                                      "enable.partition.eof": True}))
    consumer.assign([TopicPartition(args.topic, 0, 0)])
    got = []
    deadline = time.monotonic() + 15
    while len(got) < len(want) and time.monotonic() < deadline:
        msg = consumer.poll(0.5)
        if msg is None:
            continue
        if msg.error():
            if msg.error().code() == KafkaError._PARTITION_EOF:
                break
            print("consume: %s" % msg.error(), file=sys.stderr)
            return 1
        got.append((msg.key(), msg.value()))
    consumer.close()
    return got


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--client", choices=["kafka-python", "confluent-kafka"], required=True)
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--protocol", default="SASL_PLAINTEXT", help="SASL_PLAINTEXT or SASL_SSL")
    ap.add_argument("--mechanism", required=True)
    ap.add_argument("--user", required=True)
    ap.add_argument("--password", required=True)
    ap.add_argument("--ca", help="CA file for SASL_SSL")
    ap.add_argument("--topic", required=True)
    ap.add_argument("--count", type=int, default=500)
    ap.add_argument("--limit-s", type=int, default=40, help="bound on the whole run")
    args = ap.parse_args()
    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(args.limit_s)

    want = expected(args.count)
    got = (kafka_python if args.client == "kafka-python" else confluent)(args, want)
    if isinstance(got, int):
        return got
    if got != want:
        print("mismatch: %d consumed, %d expected" % (len(got), len(want)), file=sys.stderr)
        return 1
    print("OK: %d messages" % len(want))
    return 0


if __name__ == "__main__":
    sys.exit(main())
