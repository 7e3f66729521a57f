#!/usr/bin/python3
"""Clients at their default settings against a Kafka 0.8 broker with the edge broker's faults, through
kafka-websocket-proxy (tests/e2e/e2e_test.cpp runs them). Every run is bounded by --limit-s.

pipeline:   kafka-python (Debian's python3-kafka) produces COUNT messages to partition 0 of TOPIC without
            waiting between them, then reads the partition back from the beginning (no group). Prints
            "produced N distinct_offsets D consumed C distinct_values V in_order yes|no"; exits 0 when all
            COUNT came back, in order, 1 otherwise.
two-topics: confluent-kafka produces COUNT messages to each of 3 partitions of TOPIC-a and TOPIC-b, then one
            consumer is assigned all six partitions, interleaved (a0 b0 a1 b1 a2 b2), and reads to the end of
            each. Prints "consumed N of M"; exits 0 when every message came back.
subscribe:  confluent-kafka subscribes to TOPIC with a group and polls until the client reports an error.
            Prints "error CODE NAME: TEXT" for the first one; exits 0 when there was one, 1 when none came.
The confluent-kafka modes take more configuration with --set NAME=VALUE (the plugin's, for instance).
"""
import argparse
import signal
import sys
import time


def on_alarm(signum, frame):
    print("edge_clients: overall time limit reached", file=sys.stderr)
    sys.exit(3)


def config(args):
    conf = {"bootstrap.servers": args.bootstrap}
    for item in args.set:
        name, _, value = item.partition("=")
        conf[name] = value
    return conf


def pipeline(args):
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition

    producer = KafkaProducer(bootstrap_servers=args.bootstrap)
    values = [b"m%06d" % i for i in range(args.count)]
    futures = [producer.send(args.topic, value=v, partition=0) for v in values]
    producer.flush(timeout=args.limit_s)
    offsets = [f.get(timeout=5).offset for f in futures]
    producer.close()
    consumer = KafkaConsumer(bootstrap_servers=args.bootstrap, group_id=None, enable_auto_commit=False,
                             consumer_timeout_ms=3000)
    tp = TopicPartition(args.topic, 0)
    consumer.assign([tp])
    consumer.seek_to_beginning(tp)
    got = []
    for m in consumer:
        got.append(m.value)
        if len(got) >= args.count:
            break
    consumer.close()
    print("produced %d distinct_offsets %d consumed %d distinct_values %d in_order %s"
          % (len(offsets), len(set(offsets)), len(got), len(set(got)), "yes" if got == values else "no"))
    return 0 if got == values else 1


def two_topics(args):
    from confluent_kafka import Consumer, Producer, TopicPartition

    conf = config(args)
    producer = Producer(conf)
    topics = [args.topic + "-a", args.topic + "-b"]
    want = set()
    failed = []

    def on_delivery(err, msg):
        if err is not None:
            failed.append(str(err))

    for t in topics:
        for p in range(3):
            for i in range(args.count):
                value = b"%s/%d/%d" % (t.encode(), p, i)
                producer.produce(t, value=value, partition=p, on_delivery=on_delivery)
                want.add(value)
        producer.flush(10)
    if len(producer) != 0 or failed:
        print("produce: %d undelivered, %d failed (first: %s)" % (len(producer), len(failed), failed[:1]),
              file=sys.stderr)
        return 1
    consumer = Consumer(dict(conf, **{"group.id": "edge-two-topics", "enable.auto.commit": False,
                                      "enable.partition.eof": True}))
    consumer.assign([TopicPartition(t, p, 0) for p in range(3) for t in topics])
    got = set()
    at_end = set()
    deadline = time.monotonic() + args.limit_s - 5
    while len(at_end) < 6 and time.monotonic() < deadline:
        msg = consumer.poll(0.5)
        if msg is None:
            continue
        if msg.error():
            if msg.error().code() == -191:  # _PARTITION_EOF
                at_end.add((msg.topic(), msg.partition()))
                continue
            print("consume: %s" % msg.error(), file=sys.stderr)
            continue
        got.add(msg.value())
    consumer.close()
    print("consumed %d of %d" % (len(got & want), len(want)))
    return 0 if got == want else 1


def subscribe(args):
    from confluent_kafka import Consumer

    consumer = Consumer(dict(config(args), **{"group.id": "edge-group"}))
    consumer.subscribe([args.topic])
    deadline = time.monotonic() + args.limit_s - 5
    while time.monotonic() < deadline:
        msg = consumer.poll(0.5)
        if msg is not None and msg.error():
            e = msg.error()
            print("error %d %s: %s" % (e.code(), e.name(), e.str()))
            consumer.close()
            return 0
    consumer.close()
    print("no error within %d s" % (args.limit_s - 5))
    return 1


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["pipeline", "two-topics", "subscribe"])
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--count", type=int, default=2000)
    ap.add_argument("--limit-s", type=int, default=25, help="bound on the whole run")
    ap.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="more configuration")
    args = ap.parse_args()
    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(args.limit_s)
    return {"pipeline": pipeline, "two-topics": two_topics, "subscribe": subscribe}[args.mode](args)


if __name__ == "__main__":
    sys.exit(main())
