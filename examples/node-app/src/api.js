'use strict';
// The demo API: liveness, readiness, version, Prometheus metrics, jobs into a Redis queue, and a WebSocket
// endpoint. Environment: PORT, REDIS_URL, DATABASE_URL (readiness checks the PostgreSQL server answers),
// QUEUE_PREFIX (default "q").
const crypto = require('node:crypto');
const http = require('node:http');
const net = require('node:net');
const os = require('node:os');
const build = require('./build');
const redis = require('./redis');

// --port N (several instances per host: app_web_command "node src/api.js --port {port}") or PORT.
const portArg = process.argv.indexOf('--port');
const PORT = Number(portArg > 0 ? process.argv[portArg + 1] : process.env.PORT || 3000);
const INSTANCE = `${os.hostname()}:${PORT}`;
const PREFIX = process.env.QUEUE_PREFIX || 'q';
const QUEUE_NAME = /^[A-Za-z0-9_-]{1,64}$/;

// ------------------------------------------------------------------------------------------------ metrics
const BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 10];
const requests = new Map(); // "method status" -> count
const durations = new Map(); // method -> {buckets, sum, count}
let wsOpen = 0;
let wsTotal = 0;

function observe(method, status, seconds) {
  const key = `${method} ${status}`;
  requests.set(key, (requests.get(key) || 0) + 1);
  let d = durations.get(method);
  if (!d) {
    d = { buckets: BUCKETS.map(() => 0), sum: 0, count: 0 };
    durations.set(method, d);
  }
  BUCKETS.forEach((b, i) => {
    if (seconds <= b) d.buckets[i] += 1;
  });
  d.sum += seconds;
  d.count += 1;
}

function metricsText() {
  const lines = [
    '# HELP http_requests_total HTTP requests',
    '# TYPE http_requests_total counter',
  ];
  for (const [key, n] of requests) {
    const [method, status] = key.split(' ');
    lines.push(`http_requests_total{method="${method}",status="${status}"} ${n}`);
  }
  lines.push('# HELP http_request_duration_seconds HTTP request duration', '# TYPE http_request_duration_seconds histogram');
  for (const [method, d] of durations) {
    BUCKETS.forEach((b, i) => lines.push(`http_request_duration_seconds_bucket{method="${method}",le="${b}"} ${d.buckets[i]}`));
    lines.push(`http_request_duration_seconds_bucket{method="${method}",le="+Inf"} ${d.count}`);
    lines.push(`http_request_duration_seconds_sum{method="${method}"} ${d.sum}`);
    lines.push(`http_request_duration_seconds_count{method="${method}"} ${d.count}`);
  }
  lines.push(
    '# HELP websocket_connections Open WebSocket connections',
    '# TYPE websocket_connections gauge',
    `websocket_connections ${wsOpen}`,
    '# HELP websocket_connections_total WebSocket connections accepted',
    '# TYPE websocket_connections_total counter',
    `websocket_connections_total ${wsTotal}`,
    '# HELP app_build_info The running release',
    '# TYPE app_build_info gauge',
    `app_build_info{version="${build.version}"} 1`,
  );
  return `${lines.join('\n')}\n`;
}

// ------------------------------------------------------------------------------------------------ helpers
function send(res, status, body) {
  const data = JSON.stringify(body);
  res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(data) });
  res.end(data);
}

function readBody(req, limit = 65536) {
  return new Promise((resolve, reject) => {
    let size = 0;
    const chunks = [];
    req.on('data', (c) => {
      size += c.length;
      if (size > limit) reject(new Error('body too large'));
      else chunks.push(c);
    });
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

let shared = null; // one Redis connection for the API's commands, reconnected on failure
async function db() {
  if (shared && shared.sock && !shared.sock.destroyed) return shared;
  shared = await redis.connect(process.env.REDIS_URL || 'redis://127.0.0.1:6379/0', { timeoutMs: 2000 });
  return shared;
}

function tcpCheck(url, defaultPort) {
  return new Promise((resolve) => {
    let u;
    try {
      u = new URL(url);
    } catch {
      resolve('error: bad URL');
      return;
    }
    const sock = net.createConnection({ host: u.hostname, port: Number(u.port || defaultPort) });
    sock.setTimeout(2000, () => {
      sock.destroy();
      resolve('error: timeout');
    });
    sock.once('connect', () => {
      sock.end();
      resolve('ok');
    });
    sock.once('error', (e) => resolve(`error: ${e.code || e.message}`));
  });
}

async function readiness() {
  const checks = {};
  if (build.broken) checks.release = 'built broken on purpose (rollout tests)';
  try {
    checks.redis = (await (await db()).call('PING')) === 'PONG' ? 'ok' : 'error: no PONG';
  } catch (e) {
    checks.redis = `error: ${e.message}`;
  }
  if (process.env.DATABASE_URL) checks.postgresql = await tcpCheck(process.env.DATABASE_URL, 5432);
  const ok = !build.broken && Object.entries(checks).every(([k, v]) => k === 'release' || v === 'ok');
  return { ok, checks };
}

// ------------------------------------------------------------------------------------------------ routes
async function route(req, res) {
  const url = new URL(req.url, 'http://x');
  const p = url.pathname;
  if (req.method === 'GET' && (p === '/health' || p === '/api/v1/health')) {
    return send(res, 200, { status: 'ok', version: build.version, instance: INSTANCE });
  }
  if (req.method === 'GET' && (p === '/ready' || p === '/api/v1/readiness')) {
    const r = await readiness();
    return send(res, r.ok ? 200 : 503, { ready: r.ok, checks: r.checks, version: build.version });
  }
  if (build.failing && (p === '/version' || p.startsWith('/api/'))) {
    return send(res, 500, { error: 'built failing on purpose (rollout tests)', version: build.version });
  }
  if (req.method === 'GET' && (p === '/version' || p === '/api/version')) {
    return send(res, 200, { version: build.version, instance: INSTANCE });
  }
  if (req.method === 'GET' && p === '/metrics') {
    res.writeHead(200, { 'Content-Type': 'text/plain; version=0.0.4' });
    return res.end(metricsText());
  }
  const jobs = p.match(/^\/api\/queues\/([^/]+)\/jobs(?:\/(\d+))?$/);
  if (jobs) {
    const queue = jobs[1];
    if (!QUEUE_NAME.test(queue)) return send(res, 400, { error: 'queue names are 1-64 letters, digits, - or _' });
    const r = await db();
    if (req.method === 'POST' && !jobs[2]) {
      let payload;
      try {
        payload = JSON.parse((await readBody(req)) || '{}');
      } catch {
        return send(res, 400, { error: 'the body must be JSON' });
      }
      const id = await r.call('INCR', `${PREFIX}:${queue}:id`);
      const job = { id, queue, data: payload, enqueued_at: Date.now() / 1000, enqueued_by: INSTANCE };
      await r.call('HSET', `${PREFIX}:${queue}:jobs`, id, JSON.stringify(job));
      await r.call('LPUSH', `${PREFIX}:${queue}:wait`, id);
      return send(res, 201, { id, queue, instance: INSTANCE, version: build.version });
    }
    if (req.method === 'GET' && jobs[2]) {
      const done = await r.call('HGET', `${PREFIX}:${queue}:done`, jobs[2]);
      if (done) return send(res, 200, { id: Number(jobs[2]), done: true, result: JSON.parse(done) });
      const known = await r.call('HEXISTS', `${PREFIX}:${queue}:jobs`, jobs[2]);
      return send(res, known ? 200 : 404, known ? { id: Number(jobs[2]), done: false } : { error: 'no such job' });
    }
  }
  return send(res, 404, { error: 'not found' });
}

const server = http.createServer((req, res) => {
  const started = process.hrtime.bigint();
  res.on('finish', () => {
    if (req.url !== '/metrics') observe(req.method, res.statusCode, Number(process.hrtime.bigint() - started) / 1e9);
  });
  route(req, res).catch((e) => {
    if (!res.headersSent) send(res, 503, { error: e.message });
    else res.destroy();
  });
});
server.keepAliveTimeout = 75000; // longer than nginx's upstream keepalive_timeout (nginx_upstream_keepalive_timeout, 1 s)

// ------------------------------------------------------------------------------------------------ WebSocket
// RFC 6455 on /ws: the server greets with {"hello": instance, "version"}, then echoes every text message as
// {"echo": text, "instance"}; pings are answered, a close is returned.
function frame(opcode, payload) {
  const data = Buffer.from(payload);
  let header;
  if (data.length < 126) header = Buffer.from([0x80 | opcode, data.length]);
  else if (data.length < 65536) {
    header = Buffer.alloc(4);
    header[0] = 0x80 | opcode;
    header[1] = 126;
    header.writeUInt16BE(data.length, 2);
  } else {
    header = Buffer.alloc(10);
    header[0] = 0x80 | opcode;
    header[1] = 127;
    header.writeBigUInt64BE(BigInt(data.length), 2);
  }
  return Buffer.concat([header, data]);
}

server.on('upgrade', (req, sock) => {
  const key = req.headers['sec-websocket-key'];
  if (new URL(req.url, 'http://x').pathname !== '/ws' || !key || (req.headers.upgrade || '').toLowerCase() !== 'websocket') {
    sock.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n');
    return;
  }
  const accept = crypto.createHash('sha1').update(`${key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`).digest('base64');
  sock.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${accept}\r\n\r\n`);
  wsOpen += 1;
  wsTotal += 1;
  sock.setNoDelay(true);
  sock.write(frame(1, JSON.stringify({ hello: INSTANCE, version: build.version })));
  let buf = Buffer.alloc(0);
  sock.on('data', (chunk) => {
    buf = Buffer.concat([buf, chunk]);
    while (buf.length >= 2) {
      const opcode = buf[0] & 0x0f;
      const masked = (buf[1] & 0x80) !== 0;
      let len = buf[1] & 0x7f;
      let off = 2;
      if (len === 126) {
        if (buf.length < 4) return;
        len = buf.readUInt16BE(2);
        off = 4;
      } else if (len === 127) {
        if (buf.length < 10) return;
        len = Number(buf.readBigUInt64BE(2));
        off = 10;
      }
      const maskOff = off;
      if (masked) off += 4;
      if (buf.length < off + len) return;
      const payload = Buffer.from(buf.subarray(off, off + len));
      if (masked) for (let i = 0; i < len; i++) payload[i] ^= buf[maskOff + (i % 4)];
      buf = buf.subarray(off + len);
      if (opcode === 1) sock.write(frame(1, JSON.stringify({ echo: payload.toString('utf8'), instance: INSTANCE })));
      else if (opcode === 9) sock.write(frame(10, payload));
      else if (opcode === 8) {
        sock.end(frame(8, payload.subarray(0, 2)));
        return;
      }
    }
  });
  sock.on('close', () => {
    wsOpen -= 1;
  });
  sock.on('error', () => sock.destroy());
});

// ------------------------------------------------------------------------------------------------ lifecycle
server.listen(PORT, () => console.log(`api ${build.version} listening on ${INSTANCE}`));
for (const sig of ['SIGTERM', 'SIGINT']) {
  process.on(sig, () => {
    // Graceful: stop accepting, let the requests in flight finish, then exit.
    console.log(`${sig}: closing`);
    server.close(() => process.exit(0));
    server.closeIdleConnections?.();
    setTimeout(() => process.exit(0), 25000).unref();
  });
}
