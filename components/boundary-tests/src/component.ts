/**
 * Boundary tests: crosses every host interface that exists with values at
 * its edges (u32 at and above 2^31, u64 above 2^53, empty and maximum-size
 * lists), run inside wasmtime by `bin/libretto test`.
 *
 * The host runs this component with its link looped back onto itself (a
 * frame sent comes back on receive), the test MAC fe:ff:ff:ff:ff:fe and a
 * manifest that lets it bind ports 1024-65535 only.
 */
import * as wit from 'libretto:net/link@0.1.0';
import * as link from '../../lib/link.ts';
import { NO_OFFLOAD, Placements, TxBatch, type Chunk, type Offload, type RxFrame } from '../../lib/linkcodec.ts';
import * as portmap from 'libretto:net/portmap@0.1.0';
import { Buffer, ByteQueue } from 'libretto:io/buffers@0.1.0';
import * as probeHost from 'libretto:system/probe-host@0.1.0';
import { runner, test, assert, assertEq, assertThrows, Skip } from '../../lib/testing.ts';
import { IS_QUICKJS, NO_DEADLINE, num, u32, u32in, u64 } from '../../lib/abi.ts';

export { runner };

const TWO31 = 2 ** 31;
const U32_MAX = 2 ** 32 - 1;
/** Beyond any window: exact on StarlingMonkey, rounded to 2^53 on QuickJS. */
const HUGE = IS_QUICKJS ? 2 ** 53 : 2n ** 53n + 1n;
const U64_MAX = NO_DEADLINE;

function pattern(len: number, seed: number): Uint8Array {
  const b = new Uint8Array(len);
  for (let i = 0; i < len; i++) b[i] = (i * 31 + seed) & 0xff;
  return b;
}

/** An Ethernet frame from the test MAC to itself, with edge bytes up front. */
function frameBytes(len: number, seed: number): Uint8Array {
  const b = pattern(len, seed);
  const mac = [0xfe, 0xff, 0xff, 0xff, 0xff, 0xfe];
  b.set(mac, 0);
  b.set(mac, 6);
  b[12] = 0x88;
  b[13] = 0xb5; // local experimental EtherType
  if (len > 17) b.set([0x00, 0x7f, 0x80, 0xff], 14);
  return b;
}

function drain(): RxFrame[] {
  const all: RxFrame[] = [];
  for (let i = 0; i < 10_000; i++) {
    const got = link.recv(U32_MAX);
    if (got.length === 0) break;
    all.push(...got);
  }
  link.release(all.map((f) => f.id));
  return all;
}

function sendOne(head: Uint8Array, offload: Offload = NO_OFFLOAD, chunks: Chunk[] = []) {
  const tx = new TxBatch();
  tx.frame(head, offload, chunks);
  return link.send(tx);
}

function errorCase(e: unknown): unknown {
  return (e as { payload?: unknown })?.payload ?? e;
}

test('link: info carries a 48-bit MAC with high bits set, and sane sizes', () => {
  const info = link.info();
  assertEq(info.mac, 0xfeff_ffff_fffe, 'mac');
  assertEq(info.mtu, 1500, 'mtu');
  assert(info.maxFrame >= info.mtu + 14, `max-frame ${info.maxFrame} below mtu + 14`);
  assert(info.headBytes >= 128, `head-bytes ${info.headBytes} too small for Ethernet+IPv4+TCP headers`);
  assert(info.maxBatch >= 64, `max-batch ${info.maxBatch} too small`);
});

test('link: empty batches are accepted and do nothing', () => {
  drain();
  assertEq(link.send(new TxBatch()), { sent: 0, droppedFull: 0, droppedInvalid: 0 }, 'send of an empty batch');
  assertEq(link.recv(0), [], 'recv(0)');
  assertEq(link.recv(U32_MAX), [], 'recv(u32 max) with nothing waiting');
  link.release([]);
  link.place(new Placements());
});

test('link: a frame sent comes back with the same bytes, offloads and a frame id above 2^31', () => {
  drain();
  const bytes = frameBytes(100, 7);
  const offload: Offload = { needsCsum: false, csumValid: true, gso: 'tcpv4', hdrLen: 65535, gsoSize: 65535, csumStart: 65535, csumOffset: 65535 };
  assertEq(sendOne(bytes, offload), { sent: 1, droppedFull: 0, droppedInvalid: 0 }, 'send report');
  const got = link.recv(64);
  assertEq(got.length, 1, 'frames received');
  const f = got[0];
  assert(f.id >= TWO31, `frame id ${f.id} should be at or above 2^31 (the host hands out such ids on purpose)`);
  assertEq(f.len, 100, 'len');
  assertEq(f.head, bytes, 'head');
  assertEq(f.offload, offload, 'offload');
  link.release([f.id]);
});

test('link: head is cut at head-bytes and the rest stays in the host', () => {
  drain();
  const info = link.info();
  const bytes = frameBytes(1514, 3);
  sendOne(bytes);
  const [f] = link.recv(1);
  assertEq(f.len, 1514, 'len');
  assertEq(f.head, bytes.subarray(0, info.headBytes), 'head');
  // Pull the tail out through a byte queue to prove the host kept it.
  const q = new ByteQueue(4096);
  const p = new Placements();
  p.add(f.id, info.headBytes, 1514 - info.headBytes, q, 0);
  link.place(p);
  q.advanceTail(u64(1514 - info.headBytes));
  assertEq(q.read(u32(U32_MAX)), bytes.subarray(info.headBytes), 'tail bytes');
  link.release([f.id]);
});

test('link: a full batch of maximum-size frames gathered from a byte queue', () => {
  drain();
  const info = link.info();
  const n = info.maxBatch;
  const bodyLen = info.maxFrame - 14;
  const q = new ByteQueue(bodyLen);
  const body = pattern(bodyLen, 11);
  assertEq(q.append(body), bodyLen, 'append');
  const head = frameBytes(14, 0);
  const tx = new TxBatch();
  for (let i = 0; i < n; i++) tx.frame(head, NO_OFFLOAD, [{ queue: q, offset: 0, len: bodyLen }]);
  assertEq(link.send(tx).sent, n, 'sent');
  const got: RxFrame[] = [];
  for (let i = 0; i < 4 && got.length < n; i++) got.push(...link.recv(n));
  assertEq(got.length, n, 'received');
  for (const f of got) assertEq(f.len, info.maxFrame, 'len');
  // Check one frame's body byte for byte.
  const out = new ByteQueue(bodyLen);
  const p = new Placements();
  p.add(got[n - 1].id, 14, bodyLen, out, 0);
  link.place(p);
  out.advanceTail(u64(bodyLen));
  assertEq(out.read(bodyLen), body, 'gathered body');
  link.release(got.map((f) => f.id));
});

test('link: bad frames are dropped and counted, not trapped on', () => {
  drain();
  const info = link.info();
  const q = new ByteQueue(16);
  const big = new ByteQueue(info.maxFrame);
  big.append(pattern(info.maxFrame, 2));
  const tx = new TxBatch();
  // One byte above max-frame: a 14-byte header and a body from the queue.
  tx.frame(frameBytes(14, 1), NO_OFFLOAD, [{ queue: big, offset: 0, len: info.maxFrame - 13 }]);
  // A chunk past the queue's tail.
  tx.frame(frameBytes(14, 0), NO_OFFLOAD, [{ queue: q, offset: 2 ** 53, len: U32_MAX }]);
  // A chunk naming a frame id nobody holds.
  tx.frame(frameBytes(14, 0), NO_OFFLOAD, [{ frame: U32_MAX, offset: 0, len: 1 }]);
  // A checksum offset pointing outside the frame.
  tx.frame(frameBytes(60, 0), { ...NO_OFFLOAD, needsCsum: true, csumStart: 34, csumOffset: 65535 });
  tx.frame(frameBytes(60, 0), NO_OFFLOAD);
  assertEq(link.send(tx), { sent: 1, droppedFull: 0, droppedInvalid: 4 }, 'report');
  assertEq(drain().length, 1, 'only the good frame came back');
  link.release([0, TWO31, U32_MAX]);
});

test('link: a header longer than the descriptor holds is refused before it is sent', () => {
  assertThrows(() => new TxBatch().frame(new Uint8Array(65536), NO_OFFLOAD), 'header of 65536 bytes');
});

test('link: a descriptor cut short drops the rest of the batch, counted', () => {
  drain();
  const tx = new TxBatch();
  tx.frame(frameBytes(60, 1), NO_OFFLOAD);
  tx.frame(frameBytes(60, 2), NO_OFFLOAD);
  const whole = tx.bytes();
  const cut = whole.subarray(0, whole.length - 5);
  assertEq(wit.send(cut, []), { sent: 1, droppedFull: 0, droppedInvalid: 1 }, 'report');
  // A queue index that names no queue of the call.
  const q = new ByteQueue(16);
  q.append(pattern(16, 0));
  const tx2 = new TxBatch();
  tx2.frame(frameBytes(14, 0), NO_OFFLOAD, [{ queue: q, offset: 0, len: 4 }]);
  assertEq(wit.send(tx2.bytes(), []), { sent: 0, droppedFull: 0, droppedInvalid: 1 }, 'missing queue');
  assertEq(drain().length, 1, 'frames that came back');
});

test('link: place reports the index and reason of the first bad placement', () => {
  drain();
  sendOne(frameBytes(64, 0));
  const [f] = link.recv(1);
  const q = new ByteQueue(64);
  const place = (build: (p: Placements) => void) => {
    const p = new Placements();
    build(p);
    return errorCase(assertThrows(() => link.place(p), 'place'));
  };
  assertEq(place((p) => { p.add(f.id, 0, 64, q, 0); p.add(f.id, U32_MAX, 1, q, 0); }), { index: 1, reason: 'out-of-range' }, 'past the frame');
  assertEq(place((p) => p.add(U32_MAX, 0, 1, q, 0)), { index: 0, reason: 'unknown-frame' }, 'unknown frame');
  assertEq(place((p) => p.add(f.id, 0, 1, q, 2 ** 53)), { index: 0, reason: 'queue-full' }, 'outside the window');
  assertEq(errorCase(assertThrows(() => wit.place(new Uint8Array(25), []), 'ragged list')), { index: 0, reason: 'malformed' }, 'ragged');
  link.release([f.id]);
});

test('link: wait returns ready at once when frames wait, even with a deadline of 2^64-1', () => {
  drain();
  sendOne(frameBytes(60, 0));
  assertEq(wit.wait(U64_MAX), 'ready', 'wait(u64 max)');
  drain();
  assertEq(link.wait(0), 'timeout', 'wait(0) with nothing waiting');
  const t0 = link.now();
  assertEq(link.wait(t0 + 2_000_000), 'timeout', 'wait 2 ms');
  assert(link.now() - t0 >= 2_000_000, 'waited at least 2 ms');
});

test('link: frames come back in the order they were sent', () => {
  drain();
  const tx = new TxBatch();
  for (let i = 0; i < 200; i++) tx.frame(frameBytes(60, i), NO_OFFLOAD);
  link.send(tx);
  const got = drain();
  assertEq(got.length, 200, 'count');
  for (let i = 0; i < 200; i++) assertEq(got[i].head[20], frameBytes(60, i)[20], `frame ${i}`);
});

// ---- the engine's value conversions, each direction on its own ----------

const U32_EDGES = [0, 1, TWO31 - 1, TWO31, 3_000_000_000, U32_MAX];

test('abi: u32 into JavaScript reads exactly through u32in, bare, in a record and in a list', () => {
  for (const x of U32_EDGES) assertEq(u32in(probeHost.giveU32(String(x))), x, `give-u32 ${x}`);
  const w = probeHost.giveWide('3000000000', '5', '0', '281474976710655');
  assertEq(u32in(w.a32), 3_000_000_000, 'record field');
  assertEq(num(w.mac), 0xffff_ffff_ffff, 'mac in a record');
  assertEq(Array.from(probeHost.giveU32s(U32_EDGES.map(String)), u32in), U32_EDGES, 'list');
});

test('abi: u32 out of JavaScript arrives exactly through u32 inside a list', () => {
  assertEq(probeHost.showU32s(U32_EDGES.map(u32)), U32_EDGES.join(' '), 'list');
  assertEq(probeHost.showU32s([]), '', 'empty list');
});

test('abi: u32 out of JavaScript as a flat parameter or record field (QuickJS only)', () => {
  if (!IS_QUICKJS) {
    throw new Skip('StarlingMonkey lowers a flat u32 at or above 2^31 wrongly; libretto WIT passes such values only in lists (docs/ABI.md)');
  }
  for (const x of U32_EDGES) assertEq(probeHost.showU32(u32(x)), String(x), `show-u32 ${x}`);
  assertEq(probeHost.showWide({ a32: u32(U32_MAX), b64: u64(7), ip: [255, 255, 255, 255], mac: u64(1) }), `${U32_MAX} 7 255.255.255.255 1`, 'record');
});

test('abi: u64 both ways, exact to 2^53 and for doubles up to 2^62 (NO_DEADLINE) on every engine, to 2^64-1 on StarlingMonkey', () => {
  // 2^53 + 2 and 2^62 are doubles: a time past 104 days, and QuickJS's NO_DEADLINE.
  for (const x of [0, 1, 2 ** 32, 2 ** 53, 2 ** 53 + 2, 2 ** 62]) {
    assertEq(probeHost.showU64(u64(x)), BigInt(x).toString(), `show-u64 ${x}`);
    assertEq(num(probeHost.giveU64(BigInt(x).toString())), x, `give-u64 ${x}`);
  }
  // Into JavaScript a u64 that is no double arrives as the nearest one.
  assertEq(num(probeHost.giveU64('9007199254740993')), 2 ** 53, 'give-u64 2^53 + 1 rounds');
  if (!IS_QUICKJS) {
    assertEq(probeHost.showU64(2n ** 64n - 1n), '18446744073709551615', 'show-u64 max');
    assertEq(probeHost.giveU64('18446744073709551615'), 2n ** 64n - 1n, 'give-u64 max');
  }
});

test('abi: an IPv4 address crosses as four bytes, both ways', () => {
  const w = probeHost.giveWide('0', '0', String(0xc0a8_0101), '0');
  assertEq(Array.from(w.ip), [192, 168, 1, 1], 'ip into JavaScript');
  assertEq(probeHost.showWide({ a32: 1, b64: u64(2), ip: [255, 0, 128, 1], mac: u64(0xffff_ffff_ffff) }), '1 2 255.0.128.1 281474976710655', 'ip out');
});

test('buffers: byte-queue append, peek, read, release and the window edges', () => {
  const q = new ByteQueue(8);
  assertEq(q.capacity(), 8, 'capacity');
  assertEq(q.append(pattern(5, 1)), 5, 'append 5');
  assertEq(q.append(pattern(5, 2)), 3, 'append past capacity takes what fits');
  assertEq(q.append(new Uint8Array(0)), 0, 'append nothing');
  assertEq(num(q.tail()), 8, 'tail');
  assertEq(q.peek(u64(2), 3), pattern(5, 1).subarray(2, 5), 'peek');
  assertEq(errorCase(assertThrows(() => q.peek(U64_MAX, 1), 'peek at u64 max')), 'out-of-range', 'peek error');
  assertEq(errorCase(assertThrows(() => q.release(HUGE), 'release past tail')), 'out-of-range', 'release error');
  q.release(u64(4));
  assertEq(num(q.head()), 4, 'head after release');
  assertEq(q.read(u32(U32_MAX)).length, 4, 'read takes the rest');
  assertEq(q.read(10), new Uint8Array(0), 'read from empty');
  assertEq(num(q.head()), 8, 'head after read');
  const z = new ByteQueue(0);
  assertEq(z.append(pattern(3, 0)), 0, 'zero-capacity queue takes nothing');
});

test('buffers: out-of-order write-at then advance-tail', () => {
  const q = new ByteQueue(16);
  q.writeAt(u64(8), pattern(8, 9));
  assertEq(num(q.tail()), 0, 'tail unmoved by an early write');
  q.writeAt(u64(0), pattern(8, 4));
  q.advanceTail(u64(16));
  const all = q.read(16);
  assertEq(all.subarray(0, 8), pattern(8, 4), 'first half');
  assertEq(all.subarray(8), pattern(8, 9), 'second half');
  assertEq(errorCase(assertThrows(() => q.writeAt(U64_MAX, pattern(1, 0)), 'write-at u64 max')), 'out-of-range', 'error');
  assertEq(errorCase(assertThrows(() => q.advanceTail(HUGE), 'advance past window')), 'out-of-range', 'error');
});

test('buffers: splice moves bytes between queues inside the host', () => {
  const a = new ByteQueue(100);
  const b = new ByteQueue(50);
  a.append(pattern(100, 5));
  assertEq(b.splice(a, u32(U32_MAX)), 50, 'splice is capped by room');
  assertEq(num(a.head()), 50, 'source head moved');
  assertEq(b.read(50), pattern(100, 5).subarray(0, 50), 'spliced bytes');
});

test('buffers: buffer create, write, read and their limits', () => {
  const b = Buffer.create(4096);
  assertEq(b.len(), 4096, 'len');
  b.write(4090, pattern(6, 3));
  assertEq(b.read(4090, 6), pattern(6, 3), 'read back');
  assertEq(b.read(0, 0), new Uint8Array(0), 'empty read');
  // Offsets stay below 2^31 (buffers are at most 64 MiB): flat u32s at or above
  // 2^31 do not cross from StarlingMonkey (see the abi tests).
  assertEq(errorCase(assertThrows(() => b.read(TWO31 - 1, 1), 'read at 2^31-1')), 'out-of-range', 'read error');
  assertEq(errorCase(assertThrows(() => b.write(u32(U32_MAX), pattern(1, 0)), 'write at u32 max')), 'out-of-range', 'write error');
  assertEq(errorCase(assertThrows(() => Buffer.create(u32(U32_MAX)), 'create 4 GiB')), 'no-memory', 'create error');
  assertEq(Buffer.create(0).len(), 0, 'empty buffer');
});

test('portmap: bind, rebind, unbind and the edges of the port range', () => {
  portmap.bind('tcp', 65535);
  portmap.bind('tcp', 65535); // rebinding one's own port succeeds
  portmap.bind('udp', 65535); // UDP is a separate table
  assertEq(portmap.unbind('tcp', 65535), true, 'unbind held');
  assertEq(portmap.unbind('tcp', 65535), false, 'unbind again');
  assertEq(portmap.unbind('udp', 65535), true, 'unbind udp');
  assertEq(errorCase(assertThrows(() => portmap.bind('udp', 0), 'port 0')), 'invalid', 'port 0');
  assertEq(errorCase(assertThrows(() => portmap.bind('tcp', 1023), 'port below the allowed range')), 'forbidden', 'forbidden');
  portmap.bind('tcp', 1024);
  assertEq(portmap.unbind('tcp', 1024), true, 'unbind 1024');
});

test('portmap: ephemeral ports come from 49152-65535 and are distinct', () => {
  const seen = new Set<number>();
  for (let i = 0; i < 100; i++) {
    const p = portmap.bindEphemeral('udp');
    assert(p >= 49152 && p <= 65535, `ephemeral port ${p} out of range`);
    assert(!seen.has(p), `port ${p} handed out twice`);
    seen.add(p);
  }
  for (const p of seen) assertEq(portmap.unbind('udp', p), true, `unbind ${p}`);
});

/** `libretto:net/control`: counters at the edges of u64. */
export const control = {
  describe() {
    return { name: 'boundary-tests', version: `0.1.0+${__LIBRETTO_BACKEND__}` };
  },
  stats() {
    // QuickJS rounds u64 results above 2^53 (TOOLCHAIN.md), so only the
    // StarlingMonkey build reports the full-width values.
    const wide = !IS_QUICKJS;
    return [
      { name: 'zero', value: u64(0) },
      { name: 'two-pow-53', value: u64(2 ** 53) },
      { name: 'edge', value: wide ? 2n ** 64n - 1n : 2 ** 53 - 1 },
      { name: 'above-53', value: wide ? 2n ** 53n + 1n : 2 ** 52 + 1 },
    ];
  },
};

/** `libretto:system/probe`: echoes, so the host can check what survives. */
export const probe = {
  echoWide(w: unknown) {
    return w;
  },
  echoU32s(v: Uint32Array | number[]) {
    return v;
  },
  echoBytes(b: Uint8Array) {
    return b;
  },
  echoU64(x: bigint) {
    return x;
  },
};
