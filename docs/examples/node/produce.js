'use strict'
/*
 * Publish example entries for copysink (see docs/FORMAT.md).
 *
 * For each of the three built-in tables (memory_entries, patterns, trajectories) this sends:
 *
 *   1. one entry as a single msgpack map, its embedding an array of numbers;
 *   2. a few entries as msgpack arrays of maps: entries are grouped by the partition their own
 *      Kafka key maps to, so this is one array message per partition that gets entries (one
 *      message when the topic has one partition);
 *   3. one entry whose embedding is the compact form: msgpack bin of little-endian float32.
 *
 * Each message is keyed by the msgpack array of its entry's conflict-key values (an array
 * message by its first entry's) and partitioned with kafkajs's DefaultPartitioner (murmur2, as
 * Java clients and librdkafka's murmur2_random), so one key lands in one partition whichever
 * of these producers sent it.
 *
 * Environment:
 *   KAFKA_BOOTSTRAP      broker list (default 127.0.0.1:9092)
 *   EMBEDDING_DIM        the worker's `dim` (default 384)
 *   TOPIC_MEMORY_ENTRIES, TOPIC_PATTERNS, TOPIC_TRAJECTORIES
 *                        topics (default: the table name, which is the worker's default topic);
 *                        they must exist
 *
 * Run: npm install && node produce.js
 */
const os = require('node:os')
const { encode, decode } = require('@msgpack/msgpack')
const { Kafka, Partitioners, CompressionTypes, CompressionCodecs, logLevel } = require('kafkajs')

// kafkajs has gzip built in; LZ4 needs a codec. kafkajs-lz4 is an optional dependency (it
// builds a native module): use it when it installed, gzip otherwise.
let compression = CompressionTypes.GZIP
try {
  const LZ4Codec = require('kafkajs-lz4')
  CompressionCodecs[CompressionTypes.LZ4] = new LZ4Codec().codec
  compression = CompressionTypes.LZ4
} catch (e) {
  console.error(`kafkajs-lz4 not available (${e.code || e.message}): compressing with gzip`)
}

const BOOTSTRAP = (process.env.KAFKA_BOOTSTRAP || '127.0.0.1:9092').split(',')
const DIM = Number(process.env.EMBEDDING_DIM || 384)

// conflict-key fields of each table, in key order: the Kafka key is msgpack of their values
const KEY_FIELDS = {
  memory_entries: ['namespace', 'key'],
  patterns: ['name'],
  trajectories: ['trajectory_id', 'step_number'],
}
const TOPICS = Object.fromEntries(
  Object.keys(KEY_FIELDS).map(t => [t, process.env[`TOPIC_${t.toUpperCase()}`] || t]))

// kafkajs sends a Buffer's bytes, but writes any other value (a plain Uint8Array too) as a
// string: wrap what encode() returns, without copying.
const toBuffer = u8 => Buffer.from(u8.buffer, u8.byteOffset, u8.byteLength)
const pack = value => toBuffer(encode(value))

// msgpack array of the entry's conflict-key values, e.g. 92 a6 "traj_1" 03 for ["traj_1", 3]
const kafkaKey = (table, entry) => pack(KEY_FIELDS[table].map(field => entry[field]))

// Stands in for your model's output: DIM numbers in (-1, 1).
function fakeEmbedding (seed) {
  return Array.from({ length: DIM }, (_, i) => (((seed * 7919 + i * 104729) % 2001) - 1000) / 1024)
}

// The compact embedding: 4*DIM bytes of little-endian float32, sent as msgpack bin (a Buffer or
// any typed array encodes as bin). Float32Array uses the platform's byte order, which is
// little-endian on x86-64 and ARM; the fallback writes little-endian explicitly.
function compact (vector) {
  if (os.endianness() === 'LE') return Buffer.from(new Float32Array(vector).buffer)
  const buf = Buffer.alloc(4 * vector.length)
  vector.forEach((x, i) => buf.writeFloatLE(x, 4 * i))
  return buf
}

// { table: [single entry, [entries sent as arrays], compact entry] }
function exampleEntries () {
  return {
    memory_entries: [
      {
        namespace: 'improvements', key: 'entry_1',
        value: 'Load batches with binary COPY, then merge once',
        embedding: fakeEmbedding(1),
        metadata: { source: 'example', score: 0.92, reviewed: true, links: ['docs/FORMAT.md'], owner: null },
        tags: ['postgres', 'performance'],
      },
      [
        { namespace: 'improvements', key: 'entry_2', value: 'Keep one key in one partition', embedding: fakeEmbedding(2), metadata: { source: 'example' }, tags: ['kafka'] },
        { namespace: 'improvements', key: 'entry_3', value: 'No embedding yet: NULL' },
        { namespace: 'research', key: 'entry_1', value: 'Unicode is fine: café, 東京 🙂', embedding: fakeEmbedding(3), metadata: null, tags: [] },
      ],
      {
        namespace: 'improvements', key: 'entry_4',
        value: 'The compact embedding is 1,536 bytes instead of ~3,460',
        embedding: compact(fakeEmbedding(4)), metadata: { encoding: 'float32le' },
      },
    ],
    patterns: [
      {
        name: 'batch-writes', pattern_type: 'optimization',
        description: 'Group small writes into one transaction',
        embedding: fakeEmbedding(11), confidence: 0.87, usage_count: 42, success_count: 39,
        metadata: { category: 'database', since: '2024-05-01' },
      },
      [
        { name: 'retry-with-backoff', pattern_type: 'resilience', confidence: 0.75, usage_count: 7, success_count: 6 },
        // confidence 1.0 is the number 1 in JavaScript and packs as a msgpack int: float
        // columns take integers as well
        { name: 'cache-aside', pattern_type: 'caching', description: null, embedding: fakeEmbedding(12), confidence: 1.0, usage_count: 0, success_count: 0, metadata: { ttl_s: 300, layers: ['memory', 'redis'] } },
      ],
      {
        name: 'idempotent-consumer', pattern_type: 'messaging',
        description: 'Store the offset with the data', embedding: compact(fakeEmbedding(13)),
        confidence: 0.95, usage_count: 2147483647, success_count: 3,
      },
    ],
    trajectories: [
      {
        trajectory_id: 'traj_1', step_number: 0, action: 'read_config',
        state: { file: 'copysink.ini', ok: true }, reward: 0.0,
        embedding: fakeEmbedding(21), metadata: { agent: 'example', run: 1 },
      },
      [[1, 'connect', 0.25], [2, 'copy', 0.5], [3, 'commit', 1.0]].map(([step, action, reward]) => ({
        trajectory_id: 'traj_1', step_number: step, action,
        state: { step, position: [step, step * 0.5], done: step === 3 },
        reward, embedding: fakeEmbedding(21 + step),
      })),
      {
        trajectory_id: 'traj_2', step_number: 0, action: 'plan',
        state: { goal: 'load', depth: { a: { b: { c: 1 } } } }, reward: -0.125,
        embedding: compact(fakeEmbedding(31)), metadata: { agent: 'example' },
      },
    ],
  }
}

async function main () {
  const kafka = new Kafka({ clientId: 'copysink-example', brokers: BOOTSTRAP, logLevel: logLevel.WARN })
  const admin = kafka.admin()
  const producer = kafka.producer({
    idempotent: true, // no duplicates on retries; requires acks = -1 (all), the default
    maxInFlightRequests: 1, // keeps order across retries
    createPartitioner: Partitioners.DefaultPartitioner, // murmur2, as Java clients
    allowAutoTopicCreation: false,
  })
  const partitioner = Partitioners.DefaultPartitioner()

  await admin.connect()
  await producer.connect()
  try {
    // partitions of each topic, checked before anything is sent
    const partitions = {}
    for (const [table, topic] of Object.entries(TOPICS)) {
      try {
        partitions[table] = (await admin.fetchTopicMetadata({ topics: [topic] })).topics[0].partitions
      } catch (e) {
        throw new Error(`topic "${topic}": ${e.message} (create it first)`)
      }
    }

    for (const [table, [single, grouped, withCompact]] of Object.entries(exampleEntries())) {
      const topic = TOPICS[table]
      const partitionMetadata = partitions[table]

      // 1. one entry, one map; the partitioner picks the partition from the key
      const messages = [{ key: kafkaKey(table, single), value: pack(single) }]

      // 2. arrays of maps: one message per partition, holding the entries whose own key maps
      //    to it, so each entry stays in the partition of its key
      const byPartition = new Map()
      for (const entry of grouped) {
        const p = partitioner({ topic, partitionMetadata, message: { key: kafkaKey(table, entry) } })
        if (!byPartition.has(p)) byPartition.set(p, [])
        byPartition.get(p).push(entry)
      }
      for (const [partition, entries] of byPartition) {
        messages.push({ key: kafkaKey(table, entries[0]), value: pack(entries), partition })
      }

      // 3. compact embedding: a Buffer packs as msgpack bin
      messages.push({ key: kafkaKey(table, withCompact), value: pack(withCompact) })

      // one send() per batch of messages: kafkajs has no linger.ms, it batches what one call
      // is given, in order per partition
      const results = await producer.send({ topic, compression, acks: -1, messages })
      for (const m of messages) {
        console.log(`${topic} key=${JSON.stringify(decode(m.key))} ${m.value.length} bytes`)
      }
      for (const r of results) {
        console.log(`${r.topicName} [${r.partition}] acked from offset ${r.baseOffset}`)
      }
    }
  } finally {
    await producer.disconnect()
    await admin.disconnect()
  }
}

main().catch(e => {
  console.error(`produce failed: ${e.message}`)
  process.exit(1)
})
