'use strict';
// A BullMQ-style worker: jobs are ids in Redis lists, each queue consumed with its own concurrency.
//   node src/worker.js emails:4,reports:1
// (or WORKER_QUEUES). A job moves atomically from <prefix>:<queue>:wait to :active (BLMOVE), is processed
// (data.ms milliseconds of work; data.fail makes it fail), and its result lands in the :done hash
// ({by, release, queue}), failures in :failed. SIGTERM stops taking jobs and lets the running ones finish.
// Jobs left in :active by a crash go back to :wait at start.
const os = require('node:os');
const build = require('./build');
const redis = require('./redis');

const PREFIX = process.env.QUEUE_PREFIX || 'q';
const URL_ = process.env.REDIS_URL || 'redis://127.0.0.1:6379/0';
const spec = process.argv[2] || process.env.WORKER_QUEUES || 'default:1';
let stopping = false;

function parseSpec(text) {
  return text.split(',').filter(Boolean).map((part) => {
    const [name, n] = part.split(':');
    const concurrency = Number(n || 1);
    if (!/^[A-Za-z0-9_-]{1,64}$/.test(name) || !Number.isInteger(concurrency) || concurrency < 1) {
      throw new Error(`bad queue spec "${part}": use name[:concurrency], e.g. emails:4`);
    }
    return { name, concurrency };
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function loop(queue, slot) {
  const k = (s) => `${PREFIX}:${queue}:${s}`;
  let conn = null;
  while (!stopping) {
    try {
      if (!conn) conn = await redis.connect(URL_);
      const id = await conn.call('BLMOVE', k('wait'), k('active'), 'RIGHT', 'LEFT', 1);
      if (id === null) continue;
      const job = JSON.parse((await conn.call('HGET', k('jobs'), id)) || '{}');
      const data = job.data || {};
      await sleep(Math.min(Number(data.ms || 20), 600000));
      const result = { by: os.hostname(), release: build.version, queue, slot, finished_at: Date.now() / 1000 };
      if (data.fail) await conn.call('HSET', k('failed'), id, JSON.stringify({ ...result, error: 'failed on request' }));
      else await conn.call('HSET', k('done'), id, JSON.stringify(result));
      await conn.call('LREM', k('active'), 1, id);
      await conn.call('HINCRBY', `${PREFIX}:workers`, `${os.hostname()}:${queue}`, 1);
    } catch (e) {
      console.error(`${queue}[${slot}]: ${e.message}`);
      if (conn) conn.close();
      conn = null;
      await sleep(1000);
    }
  }
  if (conn) conn.close();
}

async function main() {
  const queues = parseSpec(spec);
  // Give back what a crashed worker left active (a single worker host per queue set is assumed for this).
  const c = await redis.connect(URL_);
  for (const q of queues) {
    while ((await c.call('LMOVE', `${PREFIX}:${q.name}:active`, `${PREFIX}:${q.name}:wait`, 'LEFT', 'RIGHT')) !== null);
  }
  c.close();
  console.log(`worker ${build.version}: ${queues.map((q) => `${q.name} x${q.concurrency}`).join(', ')}`);
  const loops = [];
  for (const q of queues) for (let i = 0; i < q.concurrency; i++) loops.push(loop(q.name, i));
  await Promise.all(loops);
  console.log('worker stopped: every running job finished');
  process.exit(0);
}

for (const sig of ['SIGTERM', 'SIGINT']) {
  process.on(sig, () => {
    console.log(`${sig}: finishing the running jobs`);
    stopping = true;
  });
}
main().catch((e) => {
  console.error(e.message);
  process.exit(1);
});
