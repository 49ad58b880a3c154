/**
 * The mc image (memcached on the POSIX shim and the TCP/IP stack) behind
 * the network server on a TAP device, driven by Debian's libmemcached
 * tools from Linux: memcapable (every binary and text protocol check it
 * has), memaslap (installed as `memcaslap`) in binary mode with data
 * verification, memslap (`memcslap --binary`: SET, GET, and the GETKQ +
 * NOOP batches of mget), and a raw socket for what the tools do not
 * exercise: unknown opcodes, quiet misses, opaque echo, bad magic,
 * oversized values and abrupt disconnects. The image must still be
 * running at the end.
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
const dir = mkdtempSync(join(tmpdir(), 'libretto-mc-'));
const IP = '10.62.1.2';
const PORT = 11211;

function skipOrFail(): boolean {
  if (gate.ok && hasTools()) return false;
  const why = gate.ok ? 'needs memcaslap, memcslap and memccapable (libmemcached-tools)' : gate.why;
  if (process.env.CI) throw new Error(`TAP tests must run in CI: ${why}`);
  console.log(`    skipped: ${why}`);
  return true;
}

function hasTools(): boolean {
  return ['memcaslap', 'memcslap', 'memccapable'].every((t) => sh(`command -v ${t}`).status === 0);
}

let sys: { proc: ReturnType<typeof spawn>; out: () => string; stop: () => Promise<number | null>; manifest: string } | null = null;
let tap: TapDevice | null = null;

async function boot() {
  tap = new TapDevice('lmcmc0', '10.62.1.1');
  const manifest = join(dir, 'mc.json');
  writeFileSync(
    manifest,
    JSON.stringify({
      name: 'lmc-mc',
      control: join(dir, 'mc.sock'),
      nic: { tap: 'lmcmc0', mac: '02:00:00:00:62:11' },
      shared_ip: `${IP}/24`,
      network_server: component('network-server.wasm'),
      apps: [{ name: 'mc', image: join(ROOT, 'build/images/mc.wasm'), ports: { tcp: [PORT] }, args: { port: PORT, 'memory-mb': 512 } }],
    }),
  );
  const proc = spawn(BIN, ['run', manifest], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  proc.stdout!.on('data', (d) => (out += d));
  proc.stderr!.on('data', (d) => (out += d));
  const exited = new Promise<number | null>((r) => proc.on('close', (c) => r(c)));
  const t0 = Date.now();
  while (!/mc: memcached .* listening on port 11211/.test(out)) {
    if (Date.now() - t0 > 60_000) throw new Error(`mc did not come up:\n${out}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  sys = {
    proc,
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

function appStatus(): string {
  const r = run(BIN, ['ctl', '--manifest', sys!.manifest, '--json', 'apps'], { timeoutMs: 20_000 });
  if (r.status !== 0) return `ctl failed: ${r.stderr}`;
  return JSON.parse(r.stdout).apps.find((a: { name: string }) => a.name === 'mc')?.status ?? 'missing';
}

/** memaslap's complaints: the lines ms_conn.c prints for error statuses, bad replies and failed verifications. */
const MEMASLAP_ERRORS = /^(Invalid magic|Unknown command|Not found|Invalid arguments|Out of memory|Too large\.|Not stored\.|Unknown error|Data exists for key\.)|verification failed|[Ee]rror/m;

test.before(async () => {
  if (!gate.ok || !hasTools()) return;
  await boot();
});

test.after(async () => {
  if (sys) {
    const code = await sys.stop();
    if (code !== 0) console.log(`the system exited ${code}:\n${sys.out().slice(-3000)}`);
  }
  tap?.remove();
});

test('memcapable: every binary and text protocol check passes', () => {
  if (skipOrFail()) return;
  const r = sh(`timeout 60 memccapable -h ${IP} -p ${PORT}`, 90_000);
  assert.match(r.out, /All tests passed/, r.out);
  assert.not.match(r.out, /\[FAIL\]/, r.out);
  // memcapable flushes the store; everything it checked is in both protocols.
  assert.match(r.out, /binary getkq\s+\[pass\]/);
  assert.match(r.out, /ascii gets\s+\[pass\]/);
});

test('memaslap -B (binary get/set 9:1) for 10 s with data verification: no errors, no misses, no failed verifications', () => {
  if (skipOrFail()) return;
  const r = sh(`timeout 60 memcaslap -s ${IP}:${PORT} -B -t 10s -v 0.1 -T 2 -c 32`, 90_000);
  const get = /cmd_get: (\d+)/.exec(r.out);
  const set = /cmd_set: (\d+)/.exec(r.out);
  const tps = /TPS: (\d+)/.exec(r.out);
  assert.ok(get && set && tps, r.out);
  console.log(`    memaslap: ${get![1]} gets, ${set![1]} sets, ${tps![1]} ops/s`);
  assert.ok(Number(get![1]) > 1000 && Number(set![1]) > 100, r.out);
  assert.match(r.out, /get_misses: 0\n/, r.out);
  assert.match(r.out, /verify_failed: 0\n/, r.out);
  assert.match(r.out, /verify_misses: 0\n/, r.out);
  assert.not.match(r.out, MEMASLAP_ERRORS, r.out);
});

test('memslap --binary: set, get and mget (GETKQ + NOOP) of 5000 keys, each retrieved, nothing on stderr', () => {
  if (skipOrFail()) return;
  for (const t of ['set', 'get', 'mget']) {
    const r = run('memcslap', [`--servers=${IP}:${PORT}`, '--binary', '--flush', `--test=${t}`, '--execute-number=5000', '--concurrency=2'], { timeoutMs: 90_000 });
    assert.is(r.status, 0, `memslap -t ${t}: ${r.stdout}${r.stderr}`);
    assert.is(r.stderr.trim(), '', `memslap -t ${t} complained: ${r.stderr}`);
    if (t !== 'set') {
      // Each thread gets every key the initial load set.
      const m = new RegExp(`Time to ${t}\\s+(\\d+) keys by\\s+2 threads`).exec(r.stdout);
      assert.ok(m, r.stdout);
      assert.is(Number(m![1]), t === 'mget' ? 10000 : 10000, r.stdout);
    }
  }
});

// ---- a raw socket --------------------------------------------------------------

function request(opcode: number, o: { key?: string; extras?: Buffer; value?: Buffer | string; opaque?: number; magic?: number } = {}): Buffer {
  const key = Buffer.from(o.key ?? '', 'latin1');
  const extras = o.extras ?? Buffer.alloc(0);
  const value = typeof o.value === 'string' ? Buffer.from(o.value) : (o.value ?? Buffer.alloc(0));
  const h = Buffer.alloc(24);
  h[0] = o.magic ?? 0x80;
  h[1] = opcode;
  h.writeUInt16BE(key.length, 2);
  h[4] = extras.length;
  h.writeUInt32BE(extras.length + key.length + value.length, 8);
  h.writeUInt32BE(o.opaque ?? 0, 12);
  return Buffer.concat([h, extras, key, value]);
}

interface Rep {
  opcode: number;
  status: number;
  opaque: number;
  key: string;
  value: string;
}

/** A connection that collects binary replies (or raw bytes) and tells when the server closed it. */
class Client {
  sock: net.Socket;
  buf = Buffer.alloc(0);
  closed = false;
  constructor() {
    this.sock = net.connect(PORT, IP);
    this.sock.on('data', (d) => (this.buf = Buffer.concat([this.buf, d])));
    this.sock.on('close', () => (this.closed = true));
    this.sock.on('error', () => (this.closed = true));
  }
  async ready() {
    await new Promise<void>((r, j) => {
      this.sock.once('connect', () => r());
      this.sock.once('error', j);
    });
  }
  send(b: Buffer | string) {
    this.sock.write(b);
  }
  async until(pred: () => boolean, ms = 10_000): Promise<void> {
    const t0 = Date.now();
    while (!pred()) {
      if (Date.now() - t0 > ms) throw new Error(`timed out; have ${this.buf.toString('hex').slice(0, 400)}`);
      await new Promise((r) => setTimeout(r, 10));
    }
  }
  /** `n` whole binary replies. */
  async replies(n: number): Promise<Rep[]> {
    const out: Rep[] = [];
    await this.until(() => {
      let p = 0;
      let k = 0;
      while (p + 24 <= this.buf.length && k < n) {
        const len = 24 + this.buf.readUInt32BE(p + 8);
        if (p + len > this.buf.length) break;
        p += len;
        k++;
      }
      return k >= n;
    });
    let p = 0;
    for (let i = 0; i < n; i++) {
      const b = this.buf;
      const keylen = b.readUInt16BE(p + 2);
      const extlen = b[p + 4];
      const bodylen = b.readUInt32BE(p + 8);
      assert.is(b[p], 0x81, 'response magic');
      out.push({
        opcode: b[p + 1],
        status: b.readUInt16BE(p + 6),
        opaque: b.readUInt32BE(p + 12),
        key: b.subarray(p + 24 + extlen, p + 24 + extlen + keylen).toString('latin1'),
        value: b.subarray(p + 24 + extlen + keylen, p + 24 + bodylen).toString('latin1'),
      });
      p += 24 + bodylen;
    }
    this.buf = this.buf.subarray(p);
    return out;
  }
  end() {
    this.sock.destroy();
  }
}

const setExtras = (flags = 0, exptime = 0) => {
  const b = Buffer.alloc(8);
  b.writeUInt32BE(flags, 0);
  b.writeUInt32BE(exptime, 4);
  return b;
};

test('raw binary: unknown opcodes get 0x0081 with the opaque and the connection goes on; quiet misses are silent; opaques echo', async () => {
  if (skipOrFail()) return;
  const c = new Client();
  await c.ready();
  c.send(Buffer.concat([request(0x01, { key: 'lmc-a', extras: setExtras(1), value: 'alpha', opaque: 1 }), request(0x01, { key: 'lmc-c', extras: setExtras(3), value: 'gamma', opaque: 2 })]));
  const stored = await c.replies(2);
  assert.equal(stored.map((r) => [r.status, r.opaque]), [[0, 1], [0, 2]]);
  c.send(request(0x55, { key: 'x', value: 'y', opaque: 0xdeadbeef }));
  c.send(request(0xfe, { opaque: 0x80000001 }));
  const unknown = await c.replies(2);
  assert.equal(unknown.map((r) => [r.opcode, r.status, r.opaque, r.value]), [
    [0x55, 0x81, 0xdeadbeef, 'Unknown command'],
    [0xfe, 0x81, 0x80000001, 'Unknown command'],
  ]);
  // memslap's mget: GETKQ per key, a NOOP closing the batch; misses say nothing.
  c.send(
    Buffer.concat([
      request(0x0d, { key: 'lmc-a', opaque: 10 }),
      request(0x0d, { key: 'lmc-b', opaque: 11 }),
      request(0x09, { key: 'lmc-b', opaque: 12 }),
      request(0x0d, { key: 'lmc-c', opaque: 13 }),
      request(0x0a, { opaque: 14 }),
    ]),
  );
  const batch = await c.replies(3);
  assert.equal(batch.map((r) => [r.opcode, r.opaque, r.key, r.value]), [
    [0x0d, 10, 'lmc-a', 'alpha'],
    [0x0d, 13, 'lmc-c', 'gamma'],
    [0x0a, 14, '', ''],
  ]);
  // A non-quiet miss answers "Not found" with its opaque.
  c.send(request(0x00, { key: 'lmc-b', opaque: 0xffffffff }));
  const [miss] = await c.replies(1);
  assert.equal([miss.status, miss.opaque, miss.value], [1, 0xffffffff, 'Not found']);
  assert.not.ok(c.closed);
  c.end();
});

test('raw: bad magic closes the connection; oversized values, torn requests and abrupt disconnects leave the server answering', async () => {
  if (skipOrFail()) return;
  // The first byte picks the protocol (0x80: binary); a binary connection
  // that then sends a bad magic is closed, as memcached closes it.
  const bad = new Client();
  await bad.ready();
  bad.send(Buffer.concat([request(0x0a, { opaque: 1 }), request(0x00, { key: 'k', magic: 0x42 }), request(0x0a, { opaque: 2 })]));
  await bad.until(() => bad.closed);
  const [first] = await bad.replies(1);
  assert.equal([first.opcode, first.opaque], [0x0a, 1]);
  assert.is(bad.buf.length, 0, 'nothing after the bad magic is answered');

  const big = new Client();
  await big.ready();
  big.send(request(0x01, { key: 'lmc-big', extras: setExtras(), value: Buffer.alloc(2 << 20, 0x61), opaque: 7 }));
  big.send(request(0x0a, { opaque: 8 }));
  const [e2big, noop] = await big.replies(2);
  assert.equal([e2big.status, e2big.opaque, noop.opcode, noop.opaque], [0x0003, 7, 0x0a, 8]);
  big.end();

  // Torn and abandoned requests: a header with half a body, a text line with no end.
  for (const junk of [request(0x01, { key: 'lmc-torn', extras: setExtras(), value: Buffer.alloc(5000) }).subarray(0, 2000), Buffer.from('set lmc-x 0 0 100\r\nabc'), Buffer.from('get lmc-')]) {
    const t = new Client();
    await t.ready();
    t.send(junk);
    await new Promise((r) => setTimeout(r, 50));
    t.sock.resetAndDestroy();
  }

  // Text protocol on the same port.
  const txt = new Client();
  await txt.ready();
  txt.send('set lmc-t 5 0 5\r\nhello\r\nget lmc-t\r\nversion\r\nbogus\r\n');
  await txt.until(() => /ERROR\r\n$/.test(txt.buf.toString()));
  assert.match(txt.buf.toString(), /^STORED\r\nVALUE lmc-t 5 5\r\nhello\r\nEND\r\nVERSION 1\.6\.\S+\r\nERROR\r\n$/);
  txt.send('quit\r\n');
  await txt.until(() => txt.closed);

  const ok = new Client();
  await ok.ready();
  ok.send(request(0x0b, { opaque: 99 }));
  const [ver] = await ok.replies(1);
  assert.equal([ver.status, ver.opaque], [0, 99]);
  ok.end();
  assert.is(appStatus(), 'running');
  assert.not.match(sys!.out(), /\[mc\].*(trap|panic|crashed)/i, sys!.out());
});

test.run();
