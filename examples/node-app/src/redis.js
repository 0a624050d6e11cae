'use strict';
// A small Redis client (RESP2 over one TCP connection, commands answered in order): enough for the demo's
// queue. REDIS_URL: redis://[user:password@]host[:port][/db].
const net = require('node:net');

function parseUrl(url) {
  const u = new URL(url);
  return {
    host: u.hostname,
    port: Number(u.port || 6379),
    user: decodeURIComponent(u.username || ''),
    password: decodeURIComponent(u.password || ''),
    db: Number((u.pathname || '/0').slice(1) || 0),
  };
}

function encode(args) {
  let out = `*${args.length}\r\n`;
  for (const a of args) {
    const s = Buffer.from(String(a));
    out += `$${s.length}\r\n${s}\r\n`;
  }
  return out;
}

// Parse one reply from buf at offset; returns [value, nextOffset] or null when incomplete.
function parse(buf, off) {
  if (off >= buf.length) return null;
  const end = buf.indexOf('\r\n', off);
  if (end < 0) return null;
  const type = String.fromCharCode(buf[off]);
  const line = buf.toString('utf8', off + 1, end);
  const next = end + 2;
  if (type === '+') return [line, next];
  if (type === '-') return [new Error(line), next];
  if (type === ':') return [Number(line), next];
  if (type === '$') {
    const n = Number(line);
    if (n < 0) return [null, next];
    if (buf.length < next + n + 2) return null;
    return [buf.toString('utf8', next, next + n), next + n + 2];
  }
  if (type === '*') {
    const n = Number(line);
    if (n < 0) return [null, next];
    const items = [];
    let pos = next;
    for (let i = 0; i < n; i++) {
      const r = parse(buf, pos);
      if (r === null) return null;
      items.push(r[0]);
      pos = r[1];
    }
    return [items, pos];
  }
  throw new Error(`unexpected Redis reply type ${type}`);
}

class Redis {
  constructor(url, { timeoutMs = 5000 } = {}) {
    this.opts = parseUrl(url);
    this.timeoutMs = timeoutMs;
    this.pending = [];
    this.buf = Buffer.alloc(0);
    this.sock = null;
  }

  async connect() {
    await new Promise((resolve, reject) => {
      this.sock = net.createConnection({ host: this.opts.host, port: this.opts.port }, resolve);
      this.sock.setTimeout(this.timeoutMs, () => this.sock.destroy(new Error('Redis connection timed out')));
      this.sock.once('error', reject);
    });
    this.sock.setTimeout(0);
    this.sock.on('data', (chunk) => this.onData(chunk));
    this.sock.on('error', (err) => this.failAll(err));
    this.sock.on('close', () => this.failAll(new Error('Redis connection closed')));
    if (this.opts.password) {
      await this.call(...(this.opts.user ? ['AUTH', this.opts.user, this.opts.password] : ['AUTH', this.opts.password]));
    }
    if (this.opts.db) await this.call('SELECT', this.opts.db);
    return this;
  }

  onData(chunk) {
    this.buf = Buffer.concat([this.buf, chunk]);
    for (;;) {
      const r = parse(this.buf, 0);
      if (r === null) break;
      this.buf = this.buf.subarray(r[1]);
      const p = this.pending.shift();
      if (!p) continue;
      if (r[0] instanceof Error) p.reject(r[0]);
      else p.resolve(r[0]);
    }
  }

  failAll(err) {
    const pending = this.pending;
    this.pending = [];
    for (const p of pending) p.reject(err);
  }

  call(...args) {
    return new Promise((resolve, reject) => {
      if (!this.sock || this.sock.destroyed) {
        reject(new Error('Redis connection closed'));
        return;
      }
      this.pending.push({ resolve, reject });
      this.sock.write(encode(args));
    });
  }

  close() {
    if (this.sock) this.sock.end();
  }
}

async function connect(url, opts) {
  return new Redis(url, opts).connect();
}

module.exports = { connect, parseUrl, encode, parse };
