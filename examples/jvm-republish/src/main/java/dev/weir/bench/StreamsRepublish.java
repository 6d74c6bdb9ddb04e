package dev.weir.bench;

import java.nio.file.Files;
import java.util.Properties;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.Produced;

/**
 * Consume → republish, exactly once, as a JVM team writes it with Kafka
 * Streams: every record is sent to the output topic with its key (and its
 * headers, which Streams forwards), and outputs and offsets commit in one
 * transaction every commit.interval.ms (100 ms, Streams' default under
 * exactly_once_v2, as Weir's transaction_interval). Runs until killed.
 *
 * <p>Usage: StreamsRepublish BOOTSTRAP INPUT OUTPUT APPLICATION_ID
 */
public final class StreamsRepublish {
  public static void main(String[] args) throws Exception {
    if (args.length != 4) {
      System.err.println("usage: StreamsRepublish BOOTSTRAP INPUT OUTPUT APPLICATION_ID");
      System.exit(2);
    }
    String bootstrap = args[0], input = args[1], output = args[2], application = args[3];
    Properties p = new Properties();
    p.put(StreamsConfig.APPLICATION_ID_CONFIG, application);
    p.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
    p.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, StreamsConfig.EXACTLY_ONCE_V2);
    p.put(StreamsConfig.COMMIT_INTERVAL_MS_CONFIG, "100");
    p.put(StreamsConfig.STATE_DIR_CONFIG, Files.createTempDirectory("weir-k").toString());
    p.put(StreamsConfig.consumerPrefix(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG), "earliest");
    // The same producer batching as Weir's (kafka.producer.linger = 5 ms).
    p.put(StreamsConfig.producerPrefix("linger.ms"), "5");
    StreamsBuilder builder = new StreamsBuilder();
    builder
        .stream(input, Consumed.with(Serdes.ByteArray(), Serdes.ByteArray()))
        .to(output, Produced.with(Serdes.ByteArray(), Serdes.ByteArray()));
    KafkaStreams streams = new KafkaStreams(builder.build(), p);
    Runtime.getRuntime().addShutdownHook(new Thread(streams::close));
    streams.start();
    Thread.currentThread().join();
  }
}
