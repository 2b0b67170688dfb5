// kafkajs transactions against a broker: commit, abort, offsets sent in a
// transaction, and a read_committed consumer. Prints one JSON line with what
// the consumer read and the group's committed offset; the Python test
// (compat/test_kafkajs.py) checks it.
//
//   node transactions.js HOST:PORT TOPIC
const { Kafka, logLevel } = require('kafkajs');

const [bootstrap, topic] = process.argv.slice(2);
const kafka = new Kafka({
  clientId: 'veil-kafkajs',
  brokers: [bootstrap],
  logLevel: logLevel.ERROR,
  retry: { retries: 10 },
});

async function readCommitted(expected) {
  const consumer = kafka.consumer({ groupId: `reader-${Date.now()}`, readUncommitted: false });
  await consumer.connect();
  await consumer.subscribe({ topics: [topic], fromBeginning: true });
  const values = [];
  await new Promise((resolve, reject) => {
    const timer = setTimeout(resolve, 30000);
    consumer
      .run({
        eachMessage: async ({ message }) => {
          values.push(message.value.toString());
          if (values.length >= expected) {
            clearTimeout(timer);
            // A moment more: anything past the expected records would show up.
            setTimeout(resolve, 1500);
          }
        },
      })
      .catch(reject);
  });
  await consumer.disconnect();
  return values;
}

async function main() {
  const producer = kafka.producer({
    transactionalId: 'kafkajs-tx',
    idempotent: true,
    maxInFlightRequests: 1,
  });
  await producer.connect();

  let txn = await producer.transaction();
  await txn.send({ topic, messages: [{ value: 'c1' }, { value: 'c2' }] });
  await txn.commit();

  txn = await producer.transaction();
  await txn.send({ topic, messages: [{ value: 'aborted' }] });
  await txn.abort();

  txn = await producer.transaction();
  await txn.send({ topic, messages: [{ value: 'c3' }] });
  await txn.sendOffsets({
    consumerGroupId: 'kafkajs-group',
    topics: [{ topic, partitions: [{ partition: 0, offset: '7' }] }],
  });
  await txn.commit();
  await producer.disconnect();

  const committed = await readCommitted(3);
  const admin = kafka.admin();
  await admin.connect();
  const offsets = await admin.fetchOffsets({ groupId: 'kafkajs-group', topics: [topic] });
  await admin.disconnect();
  console.log(JSON.stringify({ committed, offset: offsets[0].partitions[0].offset }));
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
