// kafkajs (a Kafka client for node that is not librdkafka) against a Kafka bootstrap, for
// tests/clients.rs.
//
//     node kafkajs_roundtrip.mjs BOOTSTRAP TOPIC [RECORDS]
//
// Creates TOPIC (3 partitions) with the admin client, reads its metadata, produces RECORDS
// keyed records (default 500, in several sends so each partition holds several batches) and
// reads them back from the beginning with a fresh consumer group, then reads the group's
// committed offsets. Prints one JSON line on stdout with what it saw; the Rust test judges
// it. kafkajs' own log goes to stderr.
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
const { Kafka, logLevel, Partitioners } = require("kafkajs");
const version = require("kafkajs/package.json").version;

const PARTITIONS = 3;
const SENDS = 5;

// 37 keys, so each partition holds several keys and each key many records; the value carries
// the production index and some non-ASCII text.
const record = (i) => [`key-${i % 37}`, `value-${i}-电话`];

const stderrLogger = () => ({ namespace, level, label, log }) => {
  const { message, ...extra } = log;
  process.stderr.write(`kafkajs ${label} [${namespace}] ${message} ${JSON.stringify(extra)}\n`);
};

async function main() {
  const [bootstrap, topic, records] = process.argv.slice(2);
  const n = records ? Number(records) : 500;
  const out = { client: `kafkajs ${version}`, node: process.version, errors: [] };
  const kafka = new Kafka({
    clientId: "dissuade-client-test",
    brokers: [bootstrap],
    logLevel: logLevel.WARN,
    logCreator: stderrLogger,
    retry: { retries: 3 },
  });

  const admin = kafka.admin();
  await admin.connect();
  await admin.createTopics({
    topics: [{ topic, numPartitions: PARTITIONS, replicationFactor: 1 }],
    waitForLeaders: true,
  });
  out.metadata_topics = (await admin.listTopics()).sort();
  const md = await admin.fetchTopicMetadata({ topics: [topic] });
  const t = md.topics.find((x) => x.name === topic);
  out.metadata_partitions = t ? t.partitions.length : 0;

  // The Java client's partitioner (murmur2 of the key), the default of kafkajs 2.
  const producer = kafka.producer({ createPartitioner: Partitioners.DefaultPartitioner });
  await producer.connect();
  const sent = [];
  for (let i = 0; i < n; i++) sent.push(record(i));
  let started = Date.now();
  const per = Math.ceil(n / SENDS);
  for (let s = 0; s < n; s += per) {
    await producer.send({
      topic,
      acks: -1,
      messages: sent.slice(s, s + per).map(([key, value]) => ({ key, value })),
    });
  }
  out.produce_s = (Date.now() - started) / 1000;
  out.sent = sent;
  await producer.disconnect();

  const groupId = `${topic}-group`;
  const consumer = kafka.consumer({ groupId, maxWaitTimeInMs: 100 });
  const consumed = [];
  let lastAt = Date.now();
  await consumer.connect();
  await consumer.subscribe({ topics: [topic], fromBeginning: true });
  started = Date.now();
  await consumer.run({
    eachMessage: async ({ partition, message }) => {
      consumed.push([
        partition,
        Number(message.offset),
        message.key.toString(),
        message.value.toString(),
      ]);
      lastAt = Date.now();
    },
  });
  // Until every record is back and half a second more (to catch extras), 30 s at most.
  const deadline = Date.now() + 30_000;
  while (Date.now() < deadline && !(consumed.length >= n && Date.now() - lastAt >= 500)) {
    await new Promise((r) => setTimeout(r, 50));
  }
  out.consume_s = (Date.now() - started) / 1000;
  out.consumed = consumed;
  // Disconnecting commits the offsets consumed (autoCommit is on by default).
  await consumer.disconnect();

  try {
    const offsets = await admin.fetchOffsets({ groupId, topics: [topic] });
    out.committed = {};
    for (const p of offsets[0].partitions) out.committed[String(p.partition)] = Number(p.offset);
  } catch (e) {
    out.errors.push(`fetchOffsets: ${e}`);
  }
  await admin.disconnect();

  process.stdout.write(JSON.stringify(out) + "\n");
}

main().catch((e) => {
  process.stderr.write(`kafkajs_roundtrip: ${e && e.stack ? e.stack : e}\n`);
  process.exit(1);
});
