#!/usr/bin/python3
"""confluent-kafka-python (Debian's python3-confluent-kafka) straight to a WebSocket broker, no proxy: the
only WebSocket-specific settings are plugin.library.paths and the kws.* properties given with --set.

Produces COUNT messages to partition 0 of TOPIC (keyed ones, a null key and an empty value among them),
reads partition 0 back from the beginning (assigned, no group offsets), and compares every key and value.
Exits 0 on a byte-exact match and prints "OK: N messages"; otherwise prints what differed and exits 1
(2 for usage or configuration errors, 3 for a timeout). Every step is bounded.
"""
import argparse
import signal
import sys
import time

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition


def expected(count):
    out = []
    for i in range(count):
        if i % 100 == 7:
            out.append((None, b"null-key-%d" % i))
        elif i % 100 == 11:
            out.append((b"k%d" % i, b""))
        else:
            out.append((b"k%d" % i, b"v%d-" % i + bytes(range(i % 256))))
    return out


def on_alarm(signum, frame):
    print("confluent_roundtrip: overall time limit reached", file=sys.stderr)
    sys.exit(3)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--plugin", required=True, help="path of libkws_rdkafka.so")
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--count", type=int, default=1000)
    ap.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="more configuration")
    ap.add_argument("--limit-s", type=int, default=25, help="bound on the whole run")
    args = ap.parse_args()
    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(args.limit_s)

    # The plugin comes first, as with kcat: the kws.* properties exist only once it is loaded.
    conf = {"plugin.library.paths": args.plugin, "bootstrap.servers": args.bootstrap}
    for item in args.set:
        name, _, value = item.partition("=")
        conf[name] = value

    want = expected(args.count)
    started = time.monotonic()
    try:
        producer = Producer(dict(conf, **{"linger.ms": 5}))
    except KafkaException as e:
        print("configuration error: %s" % e, file=sys.stderr)
        return 2
    failed = []

    def on_delivery(err, msg):
        if err is not None:
            failed.append(str(err))

    for k, v in want:
        while True:
            try:
                producer.produce(args.topic, key=k, value=v, partition=0, on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.1)
    left = producer.flush(15)
    if left or failed:
        print("produce: %d undelivered, %d failed (first: %s)" % (left, len(failed), failed[:1]), file=sys.stderr)
        return 1
    produced_s = time.monotonic() - started

    consumer = Consumer(dict(conf, **{"group.id": "confluent-roundtrip", "enable.auto.commit": False,
                                      "enable.partition.eof": True}))
    consumer.assign([TopicPartition(args.topic, 0, 0)])
    got = []
    deadline = time.monotonic() + 15
    while len(got) < len(want) and time.monotonic() < deadline:
        msg = consumer.poll(0.5)
        if msg is None:
            continue
        if msg.error():
            if msg.error().code() == -191:  # _PARTITION_EOF
                break
            if msg.error().code() == 35 and "FindCoordinator" in msg.error().str():
                # A broker without consumer groups (the 0.8 profile): reported once, assign() goes on.
                continue
            print("consume: %s" % msg.error(), file=sys.stderr)
            return 1
        got.append((msg.key(), msg.value() if msg.value() is not None else b""))
    consumer.close()

    if got != want:
        first = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
        print("mismatch: %d consumed, %d expected, first difference at offset %d" % (len(got), len(want), first),
              file=sys.stderr)
        return 1
    print("OK: %d messages, produced in %.0f ms, round trip %.0f ms"
          % (len(want), produced_s * 1000, (time.monotonic() - started) * 1000))
    return 0


if __name__ == "__main__":
    sys.exit(main())
