/**
 * The httpd image (HTTP/1.1 on the POSIX shim and the TCP/IP stack) behind
 * the network server on a TAP device, driven from Linux: Debian's wrk at
 * concurrency 1, 10, 30 and 60 against /4k, /16k, /64k and /128k, every
 * response checked (status 200, Content-Length and body length, total
 * bytes read), with no socket errors and no non-2xx answers; then a raw
 * socket for bad input: malformed requests (400, 501) and a header above
 * the app's 8 KiB limit (431) each get an error and a closed connection;
 * a request sent one byte per segment is served; pipelined requests are
 * answered in order; abrupt disconnects mid-request and mid-response
 * leave the image serving, and `ctl apps` says it is still running;
 * the timeouts (set short here): a header not whole in time gets 408 and
 * a close, an idle keep-alive connection and a client that stops reading
 * are closed, and a connection in use is not.
 *
 * Needs root (TAP device) and wrk: skipped outside CI without them, a
 * failure under CI.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BIN, component, ROOT, run } from './helpers.ts';
import { canAdminNetwork, sh, TapDevice } from './net.ts';

const gate = canAdminNetwork();
const dir = mkdtempSync(join(tmpdir(), 'libretto-httpd-'));
const TAP = 'lhtt0';
const IP = '10.65.2.2';
const PORT = 80;
const SIZES = [4, 16, 64, 128];
const CONCURRENCY = [1, 10, 30, 60];
const SECS = 2;
/** Short timeouts, so the test of them is quick (httpd's own are nginx's: 60, 75, 60 s). */
const HEADER_TIMEOUT_S = 3;
const KEEPALIVE_TIMEOUT_S = 4;
const SEND_TIMEOUT_S = 4;

/** Installs wrk when missing and root (make test does it through tools/setup.sh). */
function hasWrk(): boolean {
  if (sh('command -v wrk').status === 0) return true;
  if (process.getuid?.() === 0) sh('DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null 2>&1', 300_000);
  return sh('command -v wrk').status === 0;
}
const wrkOk = gate.ok && hasWrk();

function skipOrFail(): boolean {
  if (wrkOk) return false;
  const why = gate.ok ? 'needs wrk (apt-get install wrk)' : gate.why;
  if (process.env.CI) throw new Error(`TAP tests must run in CI: ${why}`);
  console.log(`    skipped: ${why}`);
  return true;
}

let sys: { out: () => string; stop: () => Promise<number | null>; manifest: string } | null = null;
let tap: TapDevice | null = null;

async function boot() {
  tap = new TapDevice(TAP, '10.65.2.1');
  const manifest = join(dir, 'httpd.json');
  writeFileSync(
    manifest,
    JSON.stringify({
      name: 'lht-httpd',
      control: join(dir, 'httpd.sock'),
      nic: { tap: TAP, mac: '02:00:00:00:65:21' },
      shared_ip: `${IP}/24`,
      network_server: component('network-server.wasm'),
      apps: [
        {
          name: 'web',
          image: join(ROOT, 'build/images/httpd.wasm'),
          ports: { tcp: [PORT] },
          args: { port: PORT, header_timeout_s: HEADER_TIMEOUT_S, keepalive_timeout_s: KEEPALIVE_TIMEOUT_S, send_timeout_s: SEND_TIMEOUT_S },
        },
      ],
    }),
  );
  const proc = spawn(BIN, ['run', manifest], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  proc.stdout!.on('data', (d) => (out += d));
  proc.stderr!.on('data', (d) => (out += d));
  const exited = new Promise<number | null>((r) => proc.on('close', (c) => r(c)));
  const t0 = Date.now();
  while (!/\[web\] httpd: listening on port 80/.test(out)) {
    if (Date.now() - t0 > 60_000) throw new Error(`httpd did not come up:\n${out}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  sys = {
    out: () => out,
    manifest,
    async stop() {
      proc.kill('SIGTERM');
      const code = await Promise.race([exited, new Promise<null>((r) => setTimeout(() => r(null), 10_000))]);
      proc.kill('SIGKILL');
      return code;
    },
  };
}

test.before(async () => {
  if (!wrkOk) return;
  await boot();
});

test.after(async () => {
  if (sys) {
    const code = await sys.stop();
    if (code !== 0) console.log(`the system exited ${code}:\n${sys.out().slice(-3000)}`);
  }
  tap?.remove();
});

/** `ctl apps` in its text form: the web app's line must say running. */
function assertRunning() {
  const r = run(BIN, ['ctl', '--manifest', sys!.manifest, 'apps'], { timeoutMs: 30_000 });
  assert.is(r.status, 0, r.stderr);
  assert.match(r.stdout, /^web\s.*\brunning\s*$/m, r.stdout);
  assert.not.match(sys!.out(), /\[web\].*(trap|panic|crashed)/i, sys!.out().slice(-3000));
}

// ---- a raw socket ------------------------------------------------------------

/** A connection that collects what the server sends and tells when it closed. */
class Client {
  sock: net.Socket;
  buf = Buffer.alloc(0);
  closed = false;
  closedAt = 0;
  error = '';
  constructor() {
    this.sock = net.connect(PORT, IP);
    this.sock.setNoDelay(true);
    this.sock.on('data', (d) => (this.buf = Buffer.concat([this.buf, d])));
    this.sock.on('close', () => {
      this.closed = true;
      this.closedAt = Date.now();
    });
    this.sock.on('error', (e: NodeJS.ErrnoException) => (this.error = e.code ?? e.message));
  }
  static async open(): Promise<Client> {
    const c = new Client();
    await new Promise<void>((r, j) => {
      c.sock.once('connect', () => r());
      c.sock.once('error', j);
    });
    return c;
  }
  send(b: Buffer | string) {
    this.sock.write(b);
  }
  async until(pred: () => boolean, what: string, ms = 10_000): Promise<void> {
    const t0 = Date.now();
    while (!pred()) {
      if (Date.now() - t0 > ms) throw new Error(`timed out waiting for ${what}; have ${this.buf.length} bytes: ${JSON.stringify(this.buf.subarray(0, 300).toString('latin1'))}`);
      await new Promise((r) => setTimeout(r, 10));
    }
  }
  end() {
    this.sock.destroy();
  }
}

interface Res {
  status: number;
  length: number;
  headers: Map<string, string>;
  headLen: number;
  body: Buffer;
}

/**
 * Whole responses at the front of `buf`, in order; `head[i]` tells that
 * the i-th is the answer to a HEAD (no body). null while incomplete.
 */
function responses(buf: Buffer, n: number, head: boolean[] = []): Res[] | null {
  const out: Res[] = [];
  let p = 0;
  for (let i = 0; i < n; i++) {
    const e = buf.indexOf('\r\n\r\n', p, 'latin1');
    if (e < 0) return null;
    const lines = buf.subarray(p, e).toString('latin1').split('\r\n');
    const m = /^HTTP\/1\.1 (\d{3}) /.exec(lines[0]);
    assert.ok(m, `a status line: ${JSON.stringify(lines[0])}`);
    const headers = new Map(lines.slice(1).map((l) => [l.slice(0, l.indexOf(':')).toLowerCase(), l.slice(l.indexOf(':') + 1).trim()]));
    const length = Number(headers.get('content-length'));
    const bodyLen = head[i] ? 0 : length;
    if (e + 4 + bodyLen > buf.length) return null;
    out.push({ status: Number(m![1]), length, headers, headLen: e + 4 - p, body: buf.subarray(e + 4, e + 4 + bodyLen) });
    p = e + 4 + bodyLen;
  }
  return out;
}

async function wait(c: Client, n: number, head: boolean[] = []): Promise<Res[]> {
  await c.until(() => responses(c.buf, n, head) !== null, `${n} responses`);
  return responses(c.buf, n, head)!;
}

/** The files hold a..z repeated. */
function isPattern(b: Buffer): boolean {
  for (let i = 0; i < b.length; i++) if (b[i] !== 97 + (i % 26)) return false;
  return true;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

// ---- wrk ----------------------------------------------------------------------

/** Counts, per wrk thread, responses that are right (200, Content-Length and body of the size) and wrong. */
const CHECK_LUA = `
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) want = tonumber(args[1]); good = 0; bad = 0 end
function response(status, headers, body)
  if status == 200 and #body == want and tonumber(headers["Content-Length"]) == want then good = good + 1 else bad = bad + 1 end
end
function done(summary, latency, requests)
  local g, b = 0, 0
  for _, t in ipairs(threads) do g = g + t:get("good"); b = b + t:get("bad") end
  io.write(string.format("CHECK good=%d bad=%d requests=%d bytes=%d\\n", g, b, summary.requests, summary.bytes))
end
`;

test('wrk at concurrency 1, 10, 30, 60 against /4k, /16k, /64k, /128k: no socket errors, no non-2xx, every response whole', async () => {
  if (skipOrFail()) return;
  const script = join(dir, 'check.lua');
  writeFileSync(script, CHECK_LUA);
  // The response header's length, per size, from a HEAD.
  const headLen = new Map<number, number>();
  for (const k of SIZES) {
    const c = await Client.open();
    c.send(`HEAD /${k}k HTTP/1.1\r\nHost: x\r\n\r\n`);
    const [r] = await wait(c, 1, [true]);
    assert.is(r.status, 200);
    assert.is(r.length, k * 1024);
    headLen.set(k, r.headLen);
    c.end();
  }
  const table: string[] = [];
  for (const k of SIZES) {
    const row: string[] = [];
    for (const conns of CONCURRENCY) {
      const size = k * 1024;
      const args = [`-t${Math.min(conns, 2)}`, `-c${conns}`, `-d${SECS}s`, '--timeout', '10s', '-s', script, `http://${IP}/${k}k`, '--', String(size)];
      const r = run('wrk', args, { timeoutMs: (SECS + 30) * 1000 });
      const out = r.stdout + r.stderr;
      const what = `wrk ${args.join(' ')}:\n${out}`;
      assert.is(r.status, 0, what);
      assert.not.match(out, /Socket errors/, what);
      assert.not.match(out, /Non-2xx/, what);
      const m = /CHECK good=(\d+) bad=(\d+) requests=(\d+) bytes=(\d+)/.exec(out);
      assert.ok(m, what);
      const [good, bad, requests, bytes] = m!.slice(1).map(Number);
      assert.ok(requests > 0, what);
      assert.is(bad, 0, `responses with a wrong status or length: ${what}`);
      assert.is(good, requests, what);
      // Bytes read: whole responses, plus at most one partial response per
      // connection still in flight when wrk stopped.
      const per = size + headLen.get(k)!;
      assert.ok(bytes >= requests * per && bytes < (requests + conns) * per, `bytes read ${bytes} for ${requests} responses of ${per} bytes: ${what}`);
      const rps = /Requests\/sec:\s+([\d.]+)/.exec(out);
      row.push(`c${conns} ${rps ? Number(rps[1]).toFixed(0) : '?'}`);
    }
    table.push(`/${k}k: ${row.join(', ')}`);
  }
  console.log(`    wrk requests/s (${SECS} s per point, 0 errors): ${table.join('; ')}`);
  assertRunning();
});

test('malformed requests get 400 (or 501 for chunked bodies) and a closed connection', async () => {
  if (skipOrFail()) return;
  const cases: [string, number][] = [
    ['GARBAGE\r\n\r\n', 400],
    ['GET /4k\r\n\r\n', 400],
    ['GET /4k HTTP/2.0\r\n\r\n', 400],
    ['get /4k HTTP/1.1\r\n\r\n', 400],
    ['GET  /4k HTTP/1.1\r\n\r\n', 400],
    ['GET /4k HTTP/1.1\r\nno colon here\r\n\r\n', 400],
    ['GET /4k HTTP/1.1\r\nContent-Length: -1\r\n\r\n', 400],
    ['\x00\x01\x02\xff\xfe binary \r\n\r\n', 400],
    ['POST /4k HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n', 501],
  ];
  for (const [req, status] of cases) {
    const c = await Client.open();
    // A good request first, on the same connection: the bad one after it
    // is answered after the good one, then the connection closes.
    c.send(`GET /4k HTTP/1.1\r\nHost: x\r\n\r\n${req}`);
    await c.until(() => c.closed, `the server to close after ${JSON.stringify(req)}`);
    const rs = responses(c.buf, 2);
    assert.ok(rs, `two responses to ${JSON.stringify(req)}: ${JSON.stringify(c.buf.toString('latin1').slice(0, 400))}`);
    assert.is(rs![0].status, 200);
    assert.ok(isPattern(rs![0].body));
    assert.is(rs![1].status, status, JSON.stringify(req));
    assert.is(rs![1].headers.get('connection'), 'close');
    c.end();
  }
  // Methods other than GET and HEAD: 405, and the connection goes on.
  const c = await Client.open();
  c.send('DELETE /4k HTTP/1.1\r\n\r\nPOST /4k HTTP/1.1\r\nContent-Length: 5\r\n\r\nhelloGET /4k HTTP/1.1\r\n\r\nGET /nothing HTTP/1.1\r\n\r\n');
  const rs = await wait(c, 4);
  assert.equal(rs.map((r) => r.status), [405, 405, 200, 404]);
  assert.not.ok(c.closed);
  c.end();
  assertRunning();
});

test('a header above the 8 KiB limit gets 431 and a closed connection; one below it is served', async () => {
  if (skipOrFail()) return;
  for (const n of [9000, 20_000, 200_000]) {
    const c = await Client.open();
    c.send(`GET /4k HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(n)}\r\n\r\n`);
    await c.until(() => c.closed, `the server to close after a ${n}-byte header`);
    const [r] = responses(c.buf, 1) ?? [];
    assert.ok(r, `a response to a ${n}-byte header: ${JSON.stringify(c.buf.toString('latin1').slice(0, 300))}`);
    assert.is(r.status, 431);
    c.end();
  }
  // Headers never ending (no blank line) are cut off at the limit too.
  const endless = await Client.open();
  for (let i = 0; i < 40 && !endless.closed; i++) {
    endless.send(`X-Line-${i}: ${'b'.repeat(500)}\r\n`);
    await sleep(5);
  }
  await endless.until(() => endless.closed, 'the server to close an endless header');
  assert.match(endless.buf.toString('latin1'), /^HTTP\/1\.1 431 /);
  endless.end();
  // Below the limit: served, and the connection stays open.
  const ok = await Client.open();
  ok.send(`GET /8k HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(7000)}\r\n\r\n`);
  const [r] = await wait(ok, 1);
  assert.is(r.status, 200);
  assert.is(r.body.length, 8192);
  assert.ok(isPattern(r.body));
  assert.not.ok(ok.closed);
  ok.end();
  assertRunning();
});

test('a request split across many segments (one byte each) is served, and the connection goes on', async () => {
  if (skipOrFail()) return;
  const c = await Client.open();
  const req = 'GET /16k HTTP/1.1\r\nHost: 10.65.2.2\r\nUser-Agent: libretto-test\r\nAccept: */*\r\n\r\n';
  for (const ch of req) {
    c.send(ch);
    await sleep(2);
  }
  const [r] = await wait(c, 1);
  assert.is(r.status, 200);
  assert.is(r.body.length, 16384);
  assert.ok(isPattern(r.body));
  // Two requests torn at odd places across three segments.
  c.buf = Buffer.alloc(0);
  const two = 'GET /4k HTTP/1.1\r\nHost: x\r\n\r\nGET /8k HTTP/1.1\r\nHost: x\r\n\r\n';
  c.send(two.slice(0, 13));
  await sleep(30);
  c.send(two.slice(13, 40));
  await sleep(30);
  c.send(two.slice(40));
  const rs = await wait(c, 2);
  assert.equal(rs.map((x) => [x.status, x.body.length]), [[200, 4096], [200, 8192]]);
  assert.not.ok(c.closed);
  c.end();
});

test('pipelined requests are answered in order, bodies whole; Connection: close ends it after the last', async () => {
  if (skipOrFail()) return;
  // Mixed: sizes, a miss, HEAD, the index, in one segment.
  const c = await Client.open();
  const reqs: [string, string][] = [
    ['GET', '/4k'],
    ['GET', '/missing'],
    ['HEAD', '/8k'],
    ['GET', '/128k'],
    ['GET', '/'],
    ['GET', '/16k?x=1'],
    ['GET', '/32k'],
  ];
  c.send(reqs.map(([m, p]) => `${m} ${p} HTTP/1.1\r\nHost: x\r\n\r\n`).join('') + 'GET /64k HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
  const rs = await wait(c, 8, [false, false, true]);
  assert.equal(
    rs.map((r) => [r.status, r.length]),
    [
      [200, 4096],
      [404, 10],
      [200, 8192],
      [200, 131072],
      [200, rs[4].length],
      [200, 16384],
      [200, 32768],
      [200, 65536],
    ],
  );
  for (const i of [0, 3, 5, 6, 7]) assert.ok(isPattern(rs[i].body), `body ${i} holds the pattern`);
  assert.match(rs[4].body.toString(), /libretto httpd/);
  assert.is(rs[7].headers.get('connection'), 'close');
  await c.until(() => c.closed, 'the server to close after Connection: close');
  c.end();

  // 120 requests in one write, sizes cycling: each answer has its request's size.
  const cycle = [4, 8, 16, 32, 64, 128];
  const n = 120;
  const b = await Client.open();
  b.send(Array.from({ length: n }, (_, i) => `GET /${cycle[i % cycle.length]}k HTTP/1.1\r\nHost: x\r\n\r\n`).join(''));
  await b.until(() => responses(b.buf, n) !== null, `${n} pipelined responses`, 60_000);
  const all = responses(b.buf, n)!;
  for (let i = 0; i < n; i++) {
    assert.is(all[i].status, 200);
    assert.is(all[i].body.length, cycle[i % cycle.length] * 1024, `response ${i} in order`);
  }
  assert.ok(all.every((r) => isPattern(r.body)));
  // An HTTP/1.0 request without keep-alive closes after its answer.
  b.buf = Buffer.alloc(0);
  b.send('GET /4k HTTP/1.0\r\n\r\n');
  await b.until(() => b.closed, 'the server to close after an HTTP/1.0 request');
  assert.is(responses(b.buf, 1)?.[0].body.length, 4096);
  b.end();
});

test('abrupt disconnects mid-request and mid-response leave the image serving; ctl apps says running', async () => {
  if (skipOrFail()) return;
  // Mid-request: a reset, a FIN, after a part of a request line or of headers.
  for (const part of ['GET /12', 'GET /128k HTTP/1.1\r\nHo', 'GET /128k HTTP/1.1\r\nHost: x\r\nX-Big: aaaa']) {
    for (const how of ['reset', 'fin'] as const) {
      const c = await Client.open();
      c.send(part);
      await sleep(20);
      if (how === 'reset') c.sock.resetAndDestroy();
      else {
        c.sock.end();
        await c.until(() => c.closed, `the server to close after a FIN mid-request (${JSON.stringify(part)})`);
        assert.is(c.buf.length, 0, 'nothing is answered to an incomplete request');
      }
    }
  }
  // Mid-response: many large responses asked for, the connection reset
  // after the first bytes arrive, and with nothing read at all.
  for (let i = 0; i < 5; i++) {
    const c = await Client.open();
    c.send('GET /128k HTTP/1.1\r\nHost: x\r\n\r\n'.repeat(20));
    await c.until(() => c.buf.length > 0, 'the first bytes of a response');
    c.sock.resetAndDestroy();
  }
  // A burst of 40 connections that each ask for /128k and vanish at once.
  const burst = await Promise.all(Array.from({ length: 40 }, () => Client.open()));
  for (const c of burst) c.send('GET /128k HTTP/1.1\r\nHost: x\r\n\r\nGET /64k HTTP/1.1\r\n');
  await sleep(30);
  for (const c of burst) c.sock.resetAndDestroy();
  // Connected and gone without a byte.
  for (let i = 0; i < 10; i++) (await Client.open()).sock.resetAndDestroy();
  await sleep(500);

  // Still serving: a whole /128k on a new connection, and a short wrk run clean.
  const c = await Client.open();
  c.send('GET /128k HTTP/1.1\r\nHost: x\r\n\r\n');
  const [r] = await wait(c, 1);
  assert.is(r.status, 200);
  assert.is(r.body.length, 131072);
  assert.ok(isPattern(r.body));
  c.end();
  const w = run('wrk', ['-t2', '-c10', '-d1s', '--timeout', '10s', `http://${IP}/4k`], { timeoutMs: 30_000 });
  const out = w.stdout + w.stderr;
  assert.not.match(out, /Socket errors|Non-2xx/, out);
  assert.match(out, /[1-9]\d* requests in/, out);
  assertRunning();
});

test('timeouts: a slow header gets 408 and a close, idle and stuck connections are closed, a busy one is not', async () => {
  if (skipOrFail()) return;
  const t0 = Date.now();
  // A header that never ends.
  const slow = await Client.open();
  slow.send('GET /4k HTTP/1.1\r\nHost: x\r\n');
  // A keep-alive connection left idle after one request.
  const idle = await Client.open();
  idle.send('GET /4k HTTP/1.1\r\nHost: x\r\n\r\n');
  await wait(idle, 1);
  const idleSince = Date.now();
  // A client that asks for much more than the windows hold and reads nothing.
  const stuck = await Client.open();
  stuck.sock.pause();
  const asked = 200;
  stuck.send('GET /128k HTTP/1.1\r\nHost: x\r\n\r\n'.repeat(asked));
  // A connection in use: a request a second for longer than every timeout.
  const busy = await Client.open();
  for (let i = 0; i < KEEPALIVE_TIMEOUT_S + 3; i++) {
    busy.buf = Buffer.alloc(0);
    busy.send('GET /4k HTTP/1.1\r\nHost: x\r\n\r\n');
    const [r] = await wait(busy, 1);
    assert.is(r.status, 200);
    await sleep(1000);
  }
  assert.not.ok(busy.closed, 'a connection in use is not timed out');
  busy.end();

  await slow.until(() => slow.closed, 'the close after the header timeout', 15_000);
  const slowAfter = (slow.closedAt - t0) / 1000;
  assert.ok(slowAfter >= HEADER_TIMEOUT_S - 0.2 && slowAfter < HEADER_TIMEOUT_S + 3, `closed ${slowAfter} s after the first header bytes`);
  const [r] = responses(slow.buf, 1) ?? [];
  assert.ok(r, `a response before the close: ${JSON.stringify(slow.buf.toString('latin1'))}`);
  assert.is(r.status, 408);
  assert.is(r.headers.get('connection'), 'close');
  await idle.until(() => idle.closed, 'the close of the idle keep-alive connection', 15_000);
  const idleAfter = (idle.closedAt - idleSince) / 1000;
  assert.ok(idleAfter >= KEEPALIVE_TIMEOUT_S - 0.2 && idleAfter < KEEPALIVE_TIMEOUT_S + 3, `closed ${idleAfter} s after its last response`);
  // The stuck client reads at last: it gets less than it asked for, then the end.
  stuck.sock.resume();
  await stuck.until(() => stuck.closed, 'the close of the connection whose client stopped reading', 30_000);
  assert.ok(stuck.buf.length < asked * 131072, `the stuck connection was cut short (${stuck.buf.length} bytes)`);
  assertRunning();
});

test.run();
