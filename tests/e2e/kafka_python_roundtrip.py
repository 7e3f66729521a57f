#!/usr/bin/python3
"""kafka-python (Debian's python3-kafka) through kafka-websocket-proxy.

With --api-version auto the clients are left to find out the broker's version themselves (their default);
otherwise they are told, e.g. 0.8.0. With --sasl-mechanism they authenticate (SASL_PLAINTEXT): kafka-python 2.0
sends SaslHandshake v0 and then the bare tokens.

Produces COUNT messages to partition 0 of TOPIC (keyed ones, plus a null key and an empty value among them),
reads partition 0 back from the beginning without a consumer group, and compares every key and value.
Exits 0 on a byte-exact match; otherwise prints what differed and exits 1 (2 for usage, 3 for a timeout).
Every step is bounded; an alarm bounds the whole run as a last resort.
"""
import argparse
import signal
import sys
import time

from kafka import KafkaConsumer, KafkaProducer, TopicPartition


def expected(count):
    out = []
    for i in range(count):
        if i % 100 == 7:
            out.append((None, b"null-key-%d" % i))  # null key
        elif i % 100 == 11:
            out.append((b"k%d" % i, b""))  # empty value
        else:
            out.append((b"k%d" % i, b"v%d-" % i + bytes(range(i % 256))))  # binary values
    return out


def on_alarm(signum, frame):
    print("kafka_python_roundtrip: overall time limit reached", file=sys.stderr)
    sys.exit(3)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--count", type=int, default=1000)
    ap.add_argument("--limit-s", type=int, default=25, help="bound on the whole run")
    ap.add_argument("--api-version", default="0.8.0", help="e.g. 0.8.0, or auto for kafka-python's probe")
    ap.add_argument("--sasl-mechanism", help="SASL_PLAINTEXT with PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512")
    ap.add_argument("--sasl-username", default="")
    ap.add_argument("--sasl-password", default="")
    ap.add_argument("--ssl-cafile", help="security_protocol='SSL' (SASL_SSL with --sasl-mechanism), trusting this CA (PEM)")
    ap.add_argument("--ssl-certfile", help="with --ssl-cafile: the client certificate (PEM)")
    ap.add_argument("--ssl-keyfile", help="with --ssl-certfile: its key (PEM)")
    args = ap.parse_args()
    settings = {} if args.api_version == "auto" else {
        "api_version": tuple(int(x) for x in args.api_version.split("."))}
    if args.sasl_mechanism:
        settings.update(security_protocol="SASL_PLAINTEXT", sasl_mechanism=args.sasl_mechanism,
                       sasl_plain_username=args.sasl_username, sasl_plain_password=args.sasl_password)
    if args.ssl_cafile:
        settings.update(security_protocol="SASL_SSL" if args.sasl_mechanism else "SSL", ssl_cafile=args.ssl_cafile)
        if args.ssl_certfile:
            settings.update(ssl_certfile=args.ssl_certfile, ssl_keyfile=args.ssl_keyfile)
    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(args.limit_s)

    want = expected(args.count)
    started = time.monotonic()
    producer = KafkaProducer(bootstrap_servers=args.bootstrap, acks=1, request_timeout_ms=10000,
                             max_block_ms=10000, retries=0, **settings)
    futures = [producer.send(args.topic, key=k, value=v, partition=0) for k, v in want]
    producer.flush(timeout=15)
    offsets = [f.get(timeout=1).offset for f in futures]
    producer.close(timeout=5)
    if offsets != list(range(len(offsets))):
        print("unexpected offsets from the producer: first %r" % offsets[:5], file=sys.stderr)
        return 1
    produced_s = time.monotonic() - started

    # No group: the broker has no group coordinator, so assign the partition and seek to the beginning.
    consumer = KafkaConsumer(bootstrap_servers=args.bootstrap, group_id=None, enable_auto_commit=False,
                             consumer_timeout_ms=5000, request_timeout_ms=10000, **settings)
    tp = TopicPartition(args.topic, 0)
    consumer.assign([tp])
    consumer.seek_to_beginning(tp)
    got = []
    for m in consumer:  # ends after consumer_timeout_ms without new messages
        got.append((m.key, m.value))
        if len(got) == len(want):
            break
    consumer.close()

    if got != want:
        print("mismatch: produced %d, consumed %d" % (len(want), len(got)), file=sys.stderr)
        for i, (g, w) in enumerate(zip(got, want)):
            if g != w:
                print("first difference at offset %d: got %r, want %r" % (i, g, w), file=sys.stderr)
                break
        return 1
    print("kafka-python %s, api_version %s: %d messages round-tripped (produce %.2f s, total %.2f s)" % (
        __import__("kafka").__version__, ".".join(map(str, consumer.config["api_version"])), len(got),
        produced_s, time.monotonic() - started))
    return 0


if __name__ == "__main__":
    sys.exit(main())
