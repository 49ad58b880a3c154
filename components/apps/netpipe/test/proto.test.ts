import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { DEFAULT_END, QUIT, Receiver, Schedule, SYNC, type Op, type Options } from '../src/proto.ts';

const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');

// ---- the schedule -----------------------------------------------------------

// The sizes Debian's NPtcp 3.7.2 printed for `NPtcp -h 127.0.0.1 -u 1100`.
const NPTCP_SIZES_TO_1027 = [
  1, 2, 3, 4, 6, 8, 12, 13, 16, 19, 21, 24, 27, 29, 32, 35, 45, 48, 51, 61, 64, 67, 93, 96, 99, 125, 128, 131, 189, 192, 195, 253, 256, 259, 381, 384, 387,
  509, 512, 515, 765, 768, 771, 1021, 1024, 1027,
];

test('schedule: the sizes NPtcp uses, perturbations of 3 from 16 bytes on', () => {
  assert.equal(Schedule.sizes(1100), NPTCP_SIZES_TO_1027);
});

test('schedule: the default run ends at 8 MiB + 3 (MAXINT 10,000,000), 124 points', () => {
  const all = Schedule.sizes(DEFAULT_END);
  assert.is(all[all.length - 1], 8388611);
  assert.equal(all.slice(-6), [6291453, 6291456, 6291459, 8388605, 8388608, 8388611]);
  assert.is(all.length, 124);
  for (let i = 1; i < all.length; i++) assert.ok(all[i] > all[i - 1], `sizes grow at ${i}`);
});

// Each list is what Debian's NPtcp wrote to its -o file with these options.
test('schedule: -p 0, -i (from 5 bytes, no perturbation) and -l 100 as NPtcp runs them', () => {
  assert.equal(Schedule.sizes(40, 1, 0), [1, 2, 3, 4, 6, 8, 12, 16, 24, 32]); // -p 0 -u 40
  assert.equal(Schedule.sizes(64, 5, 0), [5, 7, 9, 13, 17, 25, 33, 49]); // -i -u 64
  // -l 100 -u 450: the increment starts at start/2, so perturbations at once.
  assert.equal(Schedule.sizes(450, 100, 3), [97, 100, 103, 147, 150, 153, 197, 200, 203, 297, 300, 303, 397, 400, 403]);
});

// ---- a transmitter, written from netpipe.c and tcp.c ------------------------

type TxOp =
  | { kind: 'write'; bytes: Uint8Array }
  | { kind: 'read'; len: number }
  | { kind: 'send'; len: number }
  | { kind: 'recv'; len: number }
  | { kind: 'reconnect' }
  | { kind: 'close' };

interface TxOptions {
  start?: number;
  perturbation?: number;
  end: number;
  stream?: boolean;
  reset?: boolean;
  integrity?: boolean;
  nrepeat?: number;
}

/** What NPtcp -h does, with a fixed repeat count instead of a timed one. */
function* transmitter(o: TxOptions, log: string[]): Generator<TxOp, void, Uint8Array | undefined> {
  const start = o.start ?? (o.integrity ? 5 : 1);
  const pert = o.perturbation ?? (o.integrity ? 0 : 3);
  const reset = o.reset || o.stream;
  function* sync(): Generator<TxOp, void, Uint8Array | undefined> {
    yield { kind: 'write', bytes: SYNC };
    const got = yield { kind: 'read', len: 6 };
    if (hex(got!) !== hex(SYNC)) throw new Error(`transmitter: sync got ${hex(got!)}`);
  }
  function* doReset(): Generator<TxOp, void, Uint8Array | undefined> {
    if (!reset) return;
    yield { kind: 'write', bytes: QUIT };
    const got = yield { kind: 'read', len: 5 };
    if (hex(got!) !== hex(QUIT)) throw new Error(`transmitter: reset got ${hex(got!)}`);
    yield { kind: 'reconnect' };
  }
  yield* sync();
  for (let n = 0; n < 100; n++) {
    yield { kind: 'send', len: start };
    yield { kind: 'recv', len: start };
  }
  yield* sync();
  yield* doReset();
  let inc = start > 1 ? Math.floor(start / 2) : 1;
  let nq = start > 1 ? 1 : 0;
  for (let len = start; len <= o.end; len += inc, nq++) {
    if (nq > 2) inc = nq % 2 ? inc + inc : inc;
    const perturbs = pert > 0 && inc > pert + 1;
    for (let p = perturbs ? -pert : 0; p <= pert; p += perturbs ? pert : pert + 1) {
      yield* sync();
      const nrepeat = o.nrepeat ?? 3;
      yield { kind: 'write', bytes: new Uint8Array([0, 0, nrepeat >> 8, nrepeat & 255]) };
      const size = len + p;
      log.push(`size ${size}`);
      for (let t = 0; t < (o.integrity ? 1 : 3); t++) {
        yield* sync();
        for (let j = 0; j < nrepeat; j++) {
          yield { kind: 'send', len: size };
          if (!o.stream) yield { kind: 'recv', len: size };
        }
        yield* doReset();
      }
      if (o.stream) {
        const t = yield { kind: 'read', len: 4 };
        log.push(`time ${Buffer.from(t!).readUInt32BE(0)}`);
      }
    }
  }
  yield { kind: 'write', bytes: QUIT };
  yield { kind: 'read', len: 5 };
  yield { kind: 'close' };
}

/** A TCP connection as two byte queues; payload bytes are 0xa5. */
class Conn {
  toRx: number[] = [];
  toTx: number[] = [];
  rxClosed = false;
  txClosed = false;
}

/**
 * Run a transmitter against a Receiver until both finish or neither can
 * move. Probes see "nothing more" only when the transmitter is blocked.
 */
function simulate(tx: TxOptions, rxOptions: Partial<Options> = {}) {
  const log: string[] = [];
  let clock = 0;
  const rx = new Receiver({ now: () => clock, ...rxOptions });
  const t = transmitter(tx, log);
  let conn = new Conn();
  let rxConn: Conn | null = conn;
  let txOp: TxOp | null = t.next().value as TxOp;
  let txDone = false;
  let rxDone = false;
  let rxResult = '';
  let connections = 1;
  const take = (q: number[], n: number) => new Uint8Array(q.splice(0, n));

  const stepTx = (): boolean => {
    if (txDone || !txOp) return false;
    let result: Uint8Array | undefined;
    switch (txOp.kind) {
      case 'write':
        conn.toRx.push(...txOp.bytes);
        break;
      case 'send':
        for (let i = 0; i < txOp.len; i++) conn.toRx.push(0xa5);
        break;
      case 'read':
      case 'recv':
        if (conn.toTx.length < txOp.len) {
          if (conn.rxClosed) throw new Error(`transmitter: end of file reading ${txOp.len} (log: ${log.slice(-3)})`);
          return false;
        }
        result = take(conn.toTx, txOp.len);
        if (txOp.kind === 'recv' && result.some((b) => b !== 0xa5)) throw new Error('transmitter: control bytes where data was due');
        break;
      case 'reconnect':
        if (!conn.rxClosed) return false; // connect after the receiver's close
        conn.txClosed = true;
        conn = new Conn();
        connections++;
        break;
      case 'close':
        conn.txClosed = true;
        txDone = true;
        return true;
    }
    clock += 1e-6;
    const r = t.next(result);
    if (r.done) txDone = true;
    else txOp = r.value as TxOp;
    return true;
  };

  const stepRx = (): boolean => {
    if (rxDone) return false;
    const op: Op = rx.op;
    if (!rxConn) {
      if (conn.rxClosed || conn.txClosed) return false;
      rxConn = conn; // accept
    }
    const c = rxConn;
    switch (op.kind) {
      case 'read':
        if (c.toRx.length < op.len) return false;
        rx.resume(take(c.toRx, op.len));
        return true;
      case 'recv': {
        if (c.toRx.length < op.len) return false;
        const got = take(c.toRx, op.len);
        if (got.some((b) => b !== 0xa5)) throw new Error(`receiver: took control bytes as data: ${hex(got)}`);
        rx.resume();
        return true;
      }
      case 'write':
        c.toTx.push(...op.bytes);
        rx.resume();
        return true;
      case 'send':
        for (let i = 0; i < op.len; i++) c.toTx.push(0xa5);
        rx.resume();
        return true;
      case 'exchange':
        if (c.toRx.length < op.len) return false;
        for (let i = 0; i < op.len; i++) c.toTx.push(0xa5);
        take(c.toRx, op.len);
        rx.resume();
        return true;
      case 'probe': {
        if (c.toRx.length > 0) {
          const n = Math.min(op.len, c.toRx.length);
          take(c.toRx, n);
          rx.resume(n);
          return true;
        }
        const txBlocked = txOp && (txOp.kind === 'read' || txOp.kind === 'recv') && conn.toTx.length < txOp.len;
        if (!txBlocked) return false;
        rx.resume(0);
        return true;
      }
      case 'reconnect':
        if (c.toRx.length > 0) throw new Error('receiver: closed with unread bytes (a reset)');
        c.rxClosed = true;
        rxConn = null;
        rx.resume();
        return true;
      case 'done':
        if (c.toRx.length > 0) throw new Error('receiver: closed with unread bytes (a reset)');
        c.rxClosed = true;
        rxDone = true;
        rxResult = 'done';
        return true;
      case 'fail':
        rxDone = true;
        rxResult = `fail: ${op.why}`;
        return true;
    }
  };

  for (let steps = 0; steps < 10_000_000; steps++) {
    const a = stepRx();
    const b = stepTx();
    if (!a && !b) break;
  }
  return { rx, log, txDone, rxResult, connections };
}

test('ping-pong (NPtcp -h, the default): every point, then the final QUIT', () => {
  const s = simulate({ end: 200 });
  assert.is(s.rxResult, 'done');
  assert.ok(s.txDone, 'the transmitter finished');
  assert.is(s.connections, 1);
  const sizes = Schedule.sizes(200);
  assert.equal(s.log, sizes.map((n) => `size ${n}`));
  assert.is(s.rx.progress.points, sizes.length);
  assert.is(s.rx.progress.streaming, false);
  assert.is(s.rx.progress.reset, false);
  assert.is(s.rx.progress.maxSize, 195);
  assert.is(s.rx.progress.messages, sizes.length * 3 * 3);
});

test('-r: Reset mode is found from the QUIT after the warm-up; the run goes on over new connections', () => {
  const s = simulate({ end: 40, reset: true });
  assert.is(s.rxResult, 'done');
  assert.ok(s.txDone);
  const points = Schedule.sizes(40).length;
  assert.is(s.connections, 1 + 1 + points * 3);
  assert.is(s.rx.progress.reset, true);
  assert.is(s.rx.progress.streaming, false);
  assert.is(s.rx.progress.resets, 1 + points * 3);
});

test('-s: streaming is found from the second message arriving unanswered; times go back', () => {
  const s = simulate({ end: 300, stream: true, nrepeat: 5 });
  assert.is(s.rxResult, 'done');
  assert.ok(s.txDone);
  assert.is(s.rx.progress.streaming, true);
  assert.is(s.rx.progress.reset, true);
  const sizes = Schedule.sizes(300);
  assert.is(s.log.filter((l) => l.startsWith('time ')).length, sizes.length);
  assert.is(s.rx.progress.messages, sizes.length * 3 * 5);
  for (const l of s.log.filter((x) => x.startsWith('time '))) assert.ok(Number(l.slice(5)) > 0, l);
});

test('-s with the mode given: no probe', () => {
  const s = simulate({ end: 20, stream: true, nrepeat: 4 }, { stream: 'yes' });
  assert.is(s.rxResult, 'done');
  assert.is(s.rx.progress.messages, Schedule.sizes(20).length * 3 * 4);
});

test('-s given to the receiver but the transmitter does not reset: a clear failure', () => {
  const s = simulate({ end: 20 }, { stream: 'yes' });
  assert.match(s.rxResult, /fail: .*Reset was due/);
});

test('-2: served as a ping-pong by default, and with both directions at once with bidir', () => {
  const a = simulate({ end: 100 });
  assert.is(a.rxResult, 'done');
  const b = simulate({ end: 100 }, { bidir: true });
  assert.is(b.rxResult, 'done');
  assert.ok(b.txDone);
});

test('-i: one trial per point from 5 bytes, no perturbation', () => {
  const s = simulate({ end: 64, integrity: true }, { integrity: true });
  assert.is(s.rxResult, 'done');
  assert.equal(
    s.log,
    Schedule.sizes(64, 5, 0).map((n) => `size ${n}`),
  );
  assert.is(s.rx.progress.messages, Schedule.sizes(64, 5, 0).length * 3);
});

test('-l and -p given to both sides', () => {
  const s = simulate({ end: 500, start: 100, perturbation: 7 }, { start: 100, perturbation: 7 });
  assert.is(s.rxResult, 'done');
  assert.equal(s.log, Schedule.sizes(500, 100, 7).map((n) => `size ${n}`));
});

test('a repeat count of one (-n 1) with Reset is served as a ping-pong', () => {
  const s = simulate({ end: 8, reset: true, nrepeat: 1 });
  assert.is(s.rxResult, 'done');
  assert.is(s.rx.progress.streaming, false);
});

test('the first bytes must be a sync; the op sequence of a start', () => {
  const rx = new Receiver({ now: () => 0 });
  assert.equal(rx.op, { kind: 'read', len: 6 });
  assert.equal(rx.resume(SYNC), { kind: 'write', bytes: SYNC });
  assert.equal(rx.resume(), { kind: 'recv', len: 1 });
  assert.equal(rx.resume(), { kind: 'send', len: 1 });
  const bad = new Receiver({ now: () => 0 });
  const op = bad.resume(new Uint8Array([0x47, 0x45, 0x54, 0x20, 0x2f, 0x20]));
  assert.is(op.kind, 'fail');
  assert.match((op as { why: string }).why, /"GET \/ " where a sync was due/);
});

test('garbage where a point sync or the final QUIT is due fails the run', () => {
  const rx = new Receiver({ now: () => 0 });
  rx.resume(SYNC);
  rx.resume();
  for (let i = 0; i < 100; i++) {
    rx.resume();
    rx.resume();
  }
  assert.equal(rx.op, { kind: 'read', len: 6 });
  rx.resume(SYNC);
  assert.equal(rx.resume(), { kind: 'read', len: 5 });
  const op = rx.resume(new Uint8Array([1, 2, 3, 4, 5]));
  assert.is(op.kind, 'fail');
});

test('a zero repeat count fails the run', () => {
  const rx = new Receiver({ now: () => 0 });
  rx.resume(SYNC);
  rx.resume();
  for (let i = 0; i < 100; i++) {
    rx.resume();
    rx.resume();
  }
  rx.resume(SYNC);
  rx.resume();
  rx.resume(SYNC.subarray(0, 5));
  rx.resume(SYNC.subarray(5));
  assert.equal(rx.resume(), { kind: 'read', len: 4 });
  assert.is(rx.resume(new Uint8Array(4)).kind, 'fail');
});

test('streaming time: the best trial, in 10 ns units, big-endian', () => {
  let clock = 0;
  const rx = new Receiver({ now: () => clock, stream: 'yes' });
  const feed = (op: Op, v?: Uint8Array | number) => {
    assert.is(rx.op.kind, op.kind);
    rx.resume(v);
  };
  feed({ kind: 'read', len: 6 }, SYNC);
  feed({ kind: 'write', bytes: SYNC });
  for (let i = 0; i < 100; i++) {
    feed({ kind: 'recv', len: 1 });
    feed({ kind: 'send', len: 1 });
  }
  feed({ kind: 'read', len: 6 }, SYNC);
  feed({ kind: 'write', bytes: SYNC });
  feed({ kind: 'read', len: 5 }, QUIT);
  feed({ kind: 'write', bytes: QUIT });
  feed({ kind: 'reconnect' });
  feed({ kind: 'read', len: 5 }, SYNC.subarray(0, 5));
  feed({ kind: 'read', len: 1 }, SYNC.subarray(5));
  feed({ kind: 'write', bytes: SYNC });
  feed({ kind: 'read', len: 4 }, new Uint8Array([0, 0, 0, 2]));
  const perTrial = [0.004, 0.002, 0.003];
  for (const dt of perTrial) {
    feed({ kind: 'read', len: 6 }, SYNC);
    feed({ kind: 'write', bytes: SYNC });
    feed({ kind: 'recv', len: 1 });
    clock += dt;
    feed({ kind: 'recv', len: 1 });
    feed({ kind: 'read', len: 5 }, QUIT);
    feed({ kind: 'write', bytes: QUIT });
    feed({ kind: 'reconnect' });
  }
  assert.is(rx.op.kind, 'write');
  // 0.002 s / 2 messages = 1 ms = 100,000 units of 10 ns.
  assert.is(hex((rx.op as { bytes: Uint8Array }).bytes), '000186a0');
});

test.run();
