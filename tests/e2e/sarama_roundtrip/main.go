// sarama_roundtrip: Debian's sarama at its default settings through kafka-websocket-proxy. Produces -count
// messages to partition 0 of -topic with the asynchronous producer (several requests in flight), reads the
// partition back from the oldest offset, and compares every value. Prints "OK: N messages" and exits 0 on a
// match; exits 1 otherwise, 3 when -limit passes first.
package main

import (
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/Shopify/sarama"
)

func main() {
	brokers := flag.String("bootstrap", "", "HOST:PORT")
	topic := flag.String("topic", "", "topic")
	count := flag.Int("count", 500, "messages")
	limit := flag.Duration("limit", 25*time.Second, "bound on the whole run")
	flag.Parse()
	time.AfterFunc(*limit, func() {
		fmt.Fprintln(os.Stderr, "sarama_roundtrip: overall time limit reached")
		os.Exit(3)
	})

	config := sarama.NewConfig()
	config.Producer.Return.Successes = true
	config.Producer.Partitioner = sarama.NewManualPartitioner
	producer, err := sarama.NewAsyncProducer([]string{*brokers}, config)
	if err != nil {
		fmt.Fprintln(os.Stderr, "producer:", err)
		os.Exit(1)
	}
	want := make([]string, *count)
	go func() {
		for i := range want {
			want[i] = fmt.Sprintf("sarama-%d", i)
			producer.Input() <- &sarama.ProducerMessage{Topic: *topic, Partition: 0, Value: sarama.StringEncoder(want[i])}
		}
	}()
	for done := 0; done < *count; done++ {
		select {
		case <-producer.Successes():
		case e := <-producer.Errors():
			fmt.Fprintln(os.Stderr, "produce:", e.Err)
			os.Exit(1)
		}
	}
	producer.Close()

	consumer, err := sarama.NewConsumer([]string{*brokers}, config)
	if err != nil {
		fmt.Fprintln(os.Stderr, "consumer:", err)
		os.Exit(1)
	}
	pc, err := consumer.ConsumePartition(*topic, 0, sarama.OffsetOldest)
	if err != nil {
		fmt.Fprintln(os.Stderr, "consume:", err)
		os.Exit(1)
	}
	for i := 0; i < *count; i++ {
		select {
		case m := <-pc.Messages():
			if string(m.Value) != want[i] {
				fmt.Fprintf(os.Stderr, "offset %d: got %q, want %q\n", m.Offset, m.Value, want[i])
				os.Exit(1)
			}
		case e := <-pc.Errors():
			fmt.Fprintln(os.Stderr, "consume:", e.Err)
			os.Exit(1)
		}
	}
	pc.Close()
	consumer.Close()
	fmt.Printf("OK: %d messages\n", *count)
}
