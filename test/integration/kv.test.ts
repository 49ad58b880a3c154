/**
 * The kv image (a Redis-protocol store) over TAP, driven by Debian's
 * redis-benchmark and redis-cli, unmodified. The image has its own IP and
 * a NIC of its own for direct mode (two TAP devices on one Linux bridge,
 * Linux at .1), behind one network server.
 *
 * - redis-benchmark -t ping,set,get,incr,lpush,lpop,mset -n 100000 -c 50,
 *   and again with -P 16 (pipelining): every test reported, no error
 *   (redis-benchmark 7 exits at the first error reply or dropped
 *   connection);
 * - redis-cli: commands, WRONGTYPE, unknown commands, expiry; raw sockets:
 *   a command split across two segments, inline and pipelined commands,
 *   a protocol error answered with -ERR and the connection closed;
 * - while redis-benchmark runs: switching server <-> direct every second
 *   for 30 s, then killing, hanging, crashing and hot-swapping the network
 *   server, each
 *   with zero errors; a prober measures the longest gap in service after
 *   each event (printed).
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BIN, component, ROOT, run } from './helpers.ts';
import { canAdminNetwork, sh } from './net.ts';

const gate = canAdminNetwork();
const tools = sh('command -v redis-benchmark && command -v redis-cli');
const dir = mkdtempSync(join(tmpdir(), 'libretto-kv-'));
const NET = '10.61.0';
const IP = `${NET}.3`;
const BR = 'lkvbr0';
const NIC = 'lkvn0';
const OWN = 'lkvd0';

function skipOrFail(): boolean {
  const why = !gate.ok ? gate.why : tools.status !== 0 ? 'needs redis-benchmark and redis-cli (redis-tools, in tools/debian-packages.txt)' : '';
  if (!why) return false;
  if (process.env.CI) throw new Error(`TAP tests must run in CI: ${why}`);
  console.log(`    skipped: ${why}`);
  return true;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A bridge with the system's NIC and the app's own NIC on it; Linux at .1. */
function bridgeUp(): () => void {
  const down = () => sh(`ip link del ${NIC} 2>/dev/null; ip link del ${OWN} 2>/dev/null; ip link del ${BR} 2>/dev/null`);
  down();
  const r = sh(
    `ip link add ${BR} type bridge && ip tuntap add dev ${NIC} mode tap && ip tuntap add dev ${OWN} mode tap && ` +
      `ip link set ${NIC} master ${BR} && ip link set ${OWN} master ${BR} && ip addr add ${NET}.1/24 dev ${BR} && ` +
      `ip link set ${NIC} up && ip link set ${OWN} up && ip link set ${BR} up`,
  );
  if (r.status !== 0) throw new Error(r.out);
  return down;
}

class System {
  readonly path = join(dir, 'kv.json');
  out = '';
  proc: ChildProcess;
  exited: Promise<unknown>;
  constructor() {
    writeFileSync(
      this.path,
      JSON.stringify({
        name: 'kv',
        control: join(dir, 'kv.sock'),
        nic: { tap: NIC, mac: '02:00:00:00:61:01' },
        shared_ip: `${NET}.2/24`,
        network_server: component('network-server.wasm'),
        apps: [{ name: 'kv', image: join(ROOT, 'build/images/kv.wasm'), ip: `${IP}/24`, direct: { tap: OWN }, args: { port: 6379 } }],
      }),
    );
    this.proc = spawn(BIN, ['run', this.path], { stdio: ['ignore', 'pipe', 'pipe'] });
    this.proc.stdout!.on('data', (d) => (this.out += d));
    this.proc.stderr!.on('data', (d) => (this.out += d));
    this.exited = new Promise((r) => this.proc.on('close', r));
  }
  async up(): Promise<void> {
    const t0 = Date.now();
    while (!/kv: listening on port 6379/.test(this.out)) {
      if (Date.now() - t0 > 90_000) throw new Error(`kv did not come up:\n${this.out}`);
      await sleep(100);
    }
  }
  ctl(...args: string[]): string {
    const r = run(BIN, ['ctl', '--manifest', this.path, ...args], { timeoutMs: 90_000 });
    return (r.status === 0 ? '' : 'ERROR ') + r.stdout + r.stderr;
  }
  async stop(): Promise<void> {
    this.proc.kill('SIGTERM');
    await Promise.race([this.exited, sleep(10_000)]);
    this.proc.kill('SIGKILL');
  }
}

let sys: System | null = null;
let bridgeDown: (() => void) | null = null;

/** Boot the system once, for every test in this file. */
async function system(): Promise<System> {
  if (sys) return sys;
  bridgeDown = bridgeUp();
  sys = new System();
  await sys.up();
  return sys;
}

test.after(async () => {
  await sys?.stop();
  bridgeDown?.();
});

/** redis-benchmark to completion; its output with progress lines removed. */
function benchmark(args: string[], timeoutMs: number): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve) => {
    const p = spawn('redis-benchmark', ['-h', IP, '-p', '6379', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    p.stdout.on('data', (d) => (out += d));
    p.stderr.on('data', (d) => (out += d));
    const timer = setTimeout(() => p.kill('SIGKILL'), timeoutMs);
    p.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, out: out.split(/[\r\n]+/).filter((l) => l.trim() && !/rps=/.test(l)).join('\n') });
    });
  });
}

const TESTS = ['PING_INLINE', 'PING_MBULK', 'SET', 'GET', 'INCR', 'LPUSH', 'LPOP', 'MSET (10 keys)'];

/** Every test's requests per second; fails on any error or a missing test. */
function checkBenchmark(r: { code: number | null; out: string }): Map<string, number> {
  assert.not.match(r.out, /Error/, `redis-benchmark saw an error:\n${r.out}`);
  assert.is(r.code, 0, `redis-benchmark exited with ${r.code}:\n${r.out}`);
  const rps = new Map<string, number>();
  for (const m of r.out.matchAll(/^(.+?): ([\d.]+) requests per second/gm)) rps.set(m[1].trim(), Number(m[2]));
  for (const t of TESTS) assert.ok(rps.has(t), `redis-benchmark did not report ${t}:\n${r.out}`);
  return rps;
}

const show = (rps: Map<string, number>) => [...rps].map(([t, v]) => `${t.replace(' (10 keys)', '')} ${Math.round(v)}`).join(', ');

test('redis-benchmark -t ping,set,get,incr,lpush,lpop,mset -n 100000 -c 50: every test, no error', async () => {
  if (skipOrFail()) return;
  await system();
  const r = await benchmark(['-t', 'ping,set,get,incr,lpush,lpop,mset', '-n', '100000', '-c', '50', '-q'], 420_000);
  console.log(`    requests/s: ${show(checkBenchmark(r))}`);
});

test('the same with -P 16 (pipelining): replies coalesced, no stall, no error', async () => {
  if (skipOrFail()) return;
  await system();
  const r = await benchmark(['-t', 'ping,set,get,incr,lpush,lpop,mset', '-n', '100000', '-c', '50', '-P', '16', '-q'], 150_000);
  const rps = checkBenchmark(r);
  console.log(`    requests/s with -P 16: ${show(rps)}`);
  // A batch answered one reply per segment meets Nagle and delayed ACKs
  // (~40 ms a batch: 50 x 16 / 0.04 = 20,000/s at best); coalesced, GET goes well past that.
  assert.ok(rps.get('GET')! > 20_000, `GET with -P 16 at ${rps.get('GET')} requests/s: replies not coalesced?`);
});

function cli(...args: string[]): string {
  const r = sh(`redis-cli -h ${IP} -p 6379 ${args.map((a) => `'${a}'`).join(' ')}`, 15_000);
  return r.out.trim();
}

test('redis-cli: commands, WRONGTYPE, unknown command, expiry, errors as replies', async () => {
  if (skipOrFail()) return;
  await system();
  assert.is(cli('PING'), 'PONG');
  assert.is(cli('FLUSHALL'), 'OK');
  assert.is(cli('SET', 'greeting', 'hello world'), 'OK');
  assert.is(cli('GET', 'greeting'), 'hello world');
  assert.is(cli('ECHO', 'café'), 'café');
  assert.is(cli('RPUSH', 'list', 'a', 'b', 'c'), '3');
  assert.is(cli('LRANGE', 'list', '0', '-1'), 'a\nb\nc');
  assert.is(cli('GET', 'list'), 'WRONGTYPE Operation against a key holding the wrong kind of value');
  assert.is(cli('LPUSH', 'greeting', 'x'), 'WRONGTYPE Operation against a key holding the wrong kind of value');
  assert.is(cli('NOSUCHCOMMAND', 'arg'), "ERR unknown command 'NOSUCHCOMMAND', with args beginning with: 'arg'");
  assert.is(cli('INCR', 'greeting'), 'ERR value is not an integer or out of range');
  assert.is(cli('GET'), "ERR wrong number of arguments for 'get' command");
  assert.is(cli('SET', 'k', 'v', 'EX', '0'), "ERR invalid expire time in 'set' command");
  assert.is(cli('MSET', 'a', '1', 'b', '2'), 'OK');
  assert.is(cli('MGET', 'a', 'nokey', 'b'), '1\n\n2');
  assert.is(cli('INCRBY', 'a', '41'), '42');
  assert.is(cli('SET', 'tmp', 'v', 'PX', '300'), 'OK');
  assert.match(cli('PTTL', 'tmp'), /^[1-3]\d\d$/);
  assert.is(cli('EXPIRE', 'a', '100'), '1');
  assert.is(cli('TTL', 'a'), '100');
  await sleep(400);
  assert.is(cli('GET', 'tmp'), '');
  assert.is(cli('EXISTS', 'tmp', 'a'), '1');
  assert.is(cli('DBSIZE'), '4');
  assert.is(cli('CONFIG', 'GET', 'appendonly'), 'appendonly\nno');
  assert.is(cli('SELECT', '0'), 'OK');
  assert.is(cli('SELECT', '3'), 'ERR DB index is out of range');
  // A batch through redis-cli's pipe mode: all answered, errors counted, connection kept.
  const pipe = sh(`printf 'SET p1 v\\r\\nGET p1\\r\\nBADCMD\\r\\nDEL p1\\r\\n' | redis-cli -h ${IP} --pipe`, 15_000).out;
  assert.match(pipe, /errors: 1, replies: 4/, pipe);
});

/** Raw socket: write the pieces with pauses, collect everything until the server closes or `ms` pass. */
function raw(pieces: (string | Buffer)[], ms = 3000): Promise<{ data: string; closed: boolean }> {
  return new Promise((resolve) => {
    const s = net.connect(6379, IP);
    s.setNoDelay(true);
    let data = '';
    let closed = false;
    s.on('data', (d) => (data += d.toString('latin1')));
    s.on('end', () => (closed = true));
    s.on('error', () => {});
    s.on('connect', async () => {
      for (const p of pieces) {
        s.write(p);
        await sleep(150);
      }
      setTimeout(() => {
        s.destroy();
        resolve({ data, closed });
      }, ms);
      s.on('close', () => resolve({ data, closed }));
    });
  });
}

test('raw sockets: a command split across segments, inline and pipelined commands; a protocol error gets -ERR and a close', async () => {
  if (skipOrFail()) return;
  await system();
  // Split inside a bulk, then inside "\r\n", each piece its own segment (150 ms apart).
  const split = await raw(['*3\r\n$3\r\nSET\r\n$5\r\nspl', 'it\r\n$5\r\nvalue\r', '\n*2\r\n$3\r\nGET\r\n$5\r\nsplit\r\n'], 500);
  assert.is(split.data, '+OK\r\n$5\r\nvalue\r\n');
  assert.not.ok(split.closed);
  const inline = await raw(['PING\r\nECHO "two words"\r\nSET inl 5\r\nINCR inl\r\n'], 500);
  assert.is(inline.data, '+PONG\r\n$9\r\ntwo words\r\n+OK\r\n:6\r\n');
  // 200 commands in one write: 200 replies, in order.
  let batch = '';
  let want = '';
  for (let i = 0; i < 200; i++) {
    batch += `*3\r\n$3\r\nSET\r\n$4\r\nk${String(i).padStart(3, '0')}\r\n$${String(i).length}\r\n${i}\r\n*2\r\n$4\r\nINCR\r\n$4\r\nk${String(i).padStart(3, '0')}\r\n`;
    want += `+OK\r\n:${i + 1}\r\n`;
  }
  const piped = await raw([batch], 1000);
  assert.is(piped.data, want);
  // Replies past the output limit (1 MiB unsent): the rest of the batch runs as they drain.
  const value = 'v'.repeat(10_000);
  assert.is((await raw([`*3\r\n$3\r\nSET\r\n$2\r\nbv\r\n$10000\r\n${value}\r\n`], 300)).data, '+OK\r\n');
  const big = await raw(['*2\r\n$3\r\nGET\r\n$2\r\nbv\r\n'.repeat(300) + 'PING\r\n'], 5000);
  assert.is(big.data.length, 300 * (8 + 10_000 + 2) + 7, 'every reply of the batch');
  assert.ok(big.data.endsWith('+PONG\r\n'));
  // Errors mid-batch are replies; the connection goes on.
  const errs = await raw(['*1\r\n$4\r\nNOPE\r\nLPUSH inl x\r\nPING\r\n'], 500);
  assert.is(errs.data, "-ERR unknown command 'NOPE', with args beginning with: \r\n-WRONGTYPE Operation against a key holding the wrong kind of value\r\n+PONG\r\n");
  assert.not.ok(errs.closed);
  // Bad protocol: answered, then closed, as Redis does. Commands before it are answered.
  const bad = await raw(['PING\r\n*1\r\n$-7\r\nPING\r\n']);
  assert.is(bad.data, '+PONG\r\n-ERR Protocol error: invalid bulk length\r\n');
  assert.ok(bad.closed, 'the server closes after a protocol error');
  const huge = await raw(['*1\r\n$999999999999\r\n']);
  assert.is(huge.data, '-ERR Protocol error: invalid bulk length\r\n');
  assert.ok(huge.closed);
  const quotes = await raw(['SET "a b\r\n']);
  assert.is(quotes.data, '-ERR Protocol error: unbalanced quotes in request\r\n');
  assert.ok(quotes.closed);
  // An abrupt disconnect half way through a big value, then QUIT on another connection: the image lives on.
  await raw(['*3\r\n$3\r\nSET\r\n$3\r\nbig\r\n$1000000\r\n' + 'x'.repeat(100_000)], 100);
  const quit = await raw(['QUIT\r\n'], 1000);
  assert.is(quit.data, '+OK\r\n');
  assert.ok(quit.closed);
  // A 1 MiB value stored and read back whole.
  assert.is(sh(`head -c 1048576 /dev/zero | tr '\\0' 'v' | redis-cli -h ${IP} -x SET bigvalue`).out.trim(), 'OK');
  assert.is(cli('STRLEN', 'bigvalue'), '1048576');
  assert.is(sh(`redis-cli -h ${IP} GET bigvalue | tr -d '\\n' | wc -c`).out.trim(), '1048576');
  assert.is(cli('PING'), 'PONG');
});

/** Sequential PINGs on one connection; completion times, to find gaps in service. */
function prober() {
  const done: number[] = [];
  const why: string[] = [];
  let stop = false;
  const loop = (async () => {
    while (!stop) {
      await new Promise<void>((resolve) => {
        const s = net.connect(6379, IP);
        s.setNoDelay(true);
        let buf = '';
        let timer: NodeJS.Timeout;
        const fail = (what: string) => {
          if (stop) return resolve();
          why.push(`${new Date().toISOString()} ${what}`);
          clearTimeout(timer);
          s.destroy();
          setTimeout(resolve, 100);
        };
        const ping = () => {
          if (stop) {
            s.destroy();
            return resolve();
          }
          timer = setTimeout(() => fail('no reply in 10 s'), 10_000);
          s.write('PING\r\n');
        };
        s.on('connect', ping);
        s.on('data', (d) => {
          buf += d;
          while (buf.startsWith('+PONG\r\n')) {
            buf = buf.slice(7);
            clearTimeout(timer);
            done.push(Date.now());
            ping();
          }
          if (buf.length >= 7 && !buf.startsWith('+PONG')) fail(`bad reply ${JSON.stringify(buf)}`);
        });
        s.on('error', (e) => fail(e.message));
        s.on('end', () => fail('closed by the server'));
      });
    }
  })();
  return {
    /** The longest gap between completions in [from - 200 ms, from + windowMs]. */
    gapAfter(from: number, windowMs = 1500): number {
      const xs = done.filter((t) => t >= from - 200 && t <= from + windowMs);
      let gap = 0;
      for (let i = 1; i < xs.length; i++) gap = Math.max(gap, xs[i] - xs[i - 1]);
      return xs.length < 2 ? windowMs : gap;
    },
    get failures() {
      return why.length;
    },
    get why() {
      return why.join('; ');
    },
    async end() {
      stop = true;
      await loop;
    },
  };
}

/**
 * redis-benchmark in loop mode (-l) for `secs` seconds, then stopped. It
 * exits by itself (status 1) only at an error reply or a lost connection.
 */
function load(secs: number): Promise<{ early: boolean; out: string; rps: string }> {
  return new Promise((resolve) => {
    const p = spawn('redis-benchmark', ['-h', IP, '-p', '6379', '-t', 'set,get', '-n', '100000', '-c', '20', '-l', '-q'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let early = true;
    p.stdout.on('data', (d) => (out += d));
    p.stderr.on('data', (d) => (out += d));
    const timer = setTimeout(() => {
      early = false;
      p.kill('SIGKILL');
    }, secs * 1000);
    p.on('close', () => {
      clearTimeout(timer);
      const lines = out.split(/[\r\n]+/).filter((l) => l.trim());
      // The last progress line of each test: "SET: rps=3345.2 (overall: 3401.1) ...".
      const overall = new Map<string, string>();
      for (const m of out.matchAll(/(\w+): rps=[\d.]+ \(overall: ([\d.]+)\)/g)) overall.set(m[1], m[2]);
      const rps = [...overall].map(([t, v]) => `${t} ${Math.round(Number(v))}/s`).join(', ');
      resolve({ early, out: lines.filter((l) => !/rps=/.test(l)).join('\n'), rps });
    });
  });
}

function checkLoad(r: { early: boolean; out: string }): void {
  assert.not.match(r.out, /Error/, `redis-benchmark saw an error:\n${r.out}`);
  assert.not.ok(r.early, `redis-benchmark stopped early (an error or a lost connection):\n${r.out}`);
}

test('switching kv server <-> direct every second for 30 s under redis-benchmark: no error', async () => {
  if (skipOrFail()) return;
  const s = await system();
  const probe = prober();
  const running = load(33);
  await sleep(1500);
  const gaps: number[] = [];
  for (let i = 0; i < 30; i++) {
    const to = i % 2 === 0 ? 'direct' : 'server';
    const t = Date.now();
    const r = s.ctl('switch', 'kv', to);
    assert.match(r, new RegExp(`switched to ${to} mode`), r);
    await sleep(Math.max(0, 1000 - (Date.now() - t)));
    gaps.push(probe.gapAfter(t, 1000));
  }
  const r = await running;
  await probe.end();
  checkLoad(r);
  assert.is(probe.failures, 0, `the prober saw failures: ${probe.why}`);
  gaps.sort((a, b) => a - b);
  console.log(`    30 switches under redis-benchmark (${r.rps}), 0 errors; longest gap in service after a switch: median ${gaps[15]} ms, max ${gaps[29]} ms`);
  assert.match(s.ctl('apps'), /kv .* server/);
  const events = s.ctl('events');
  assert.is((events.match(/switched to (direct|server) mode/g) ?? []).length, 30);
});

test('killing, hanging, crashing and hot-swapping the network server under redis-benchmark: no error', async () => {
  if (skipOrFail()) return;
  const s = await system();
  const probe = prober();
  const running = load(18);
  await sleep(1500);
  const results: string[] = [];
  const event = async (what: string, ...args: string[]) => {
    const t = Date.now();
    const r = s.ctl(...args);
    await sleep(3500);
    results.push(`${what}: ${probe.gapAfter(t, 3000)} ms`);
    return r;
  };
  assert.match(await event('kill', 'kill', 'network-server'), /killed/);
  assert.match(await event('hang', 'fault', 'network-server', 'hang'), /will hang/);
  assert.match(await event('crash', 'fault', 'network-server', 'crash'), /will crash/);
  // Another file of the server, as in switch.test.ts: the QuickJS build by
  // its own name. (With the StarlingMonkey build, which forwards at a third
  // of QuickJS's rate, one prober request went unanswered for 10 s in a
  // clean-clone run on a loaded machine; not yet explained.
  // netserver-rs.test.ts swaps between different implementations.)
  const swap = await event('swap', 'swap', 'network-server', component('network-server.quickjs.wasm'));
  assert.match(swap, /swapped to .*network-server\.quickjs\.wasm/, swap);
  const r = await running;
  await probe.end();
  checkLoad(r);
  assert.is(probe.failures, 0, `the prober saw failures: ${probe.why}`);
  console.log(`    under redis-benchmark (${r.rps}), 0 errors; time until traffic flowed again: ${results.join(', ')}`);
  assert.match(s.ctl('apps'), /network server: running \(3 restarts\)/);
  // The store kept its data through all of it.
  assert.is(cli('GET', 'greeting'), 'hello world');
});

test.run();
