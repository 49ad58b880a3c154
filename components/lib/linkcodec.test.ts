import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { readFileSync } from 'node:fs';
import { BatchError, NO_OFFLOAD, parseRx, Placements, RX_DESC_LEN, TxBatch, type Offload } from './linkcodec.ts';

const vectors = JSON.parse(readFileSync(new URL('../../test/vectors/link.json', import.meta.url), 'utf8'));

function unhex(s: string): Uint8Array {
  const clean = s.replace(/\s+/g, '');
  const out = new Uint8Array(clean.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(clean.slice(i * 2, i * 2 + 2), 16);
  return out;
}

test('receive descriptors: the shared vectors parse to their frames', () => {
  for (const v of vectors.rx) {
    const frames = parseRx(unhex(v.bytes));
    assert.is(frames.length, 1, v.name);
    const f = frames[0];
    assert.is(f.id, v.id, `${v.name}: id`);
    const whole = unhex(v.frame);
    assert.is(f.len, whole.length, `${v.name}: len`);
    assert.equal(f.offload, v.offload, `${v.name}: offload`);
    assert.equal(Array.from(f.head), Array.from(whole.subarray(0, v.headBytes)), `${v.name}: head`);
  }
});

test('receive descriptors: a batch of all vectors end to end parses in order', () => {
  const parts = vectors.rx.map((v: { bytes: string }) => unhex(v.bytes));
  const all = new Uint8Array(parts.reduce((n: number, p: Uint8Array) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    all.set(p, at);
    at += p.length;
  }
  assert.equal(parseRx(all).map((f) => f.id), vectors.rx.map((v: { id: number }) => v.id));
  assert.equal(parseRx(new Uint8Array(0)), []);
});

test('receive descriptors: cut-short input and unknown codes throw BatchError', () => {
  const good = unhex(vectors.rx[0].bytes);
  for (let cut = 1; cut < good.length; cut++) {
    assert.throws(() => parseRx(good.subarray(0, cut)), (e: unknown) => e instanceof BatchError, `cut at ${cut}`);
  }
  const badGso = good.slice();
  badGso[9] = 3;
  assert.throws(() => parseRx(badGso), /unknown offload/);
  const badFlag = good.slice();
  badFlag[8] = 0x80;
  assert.throws(() => parseRx(badFlag), /unknown offload/);
  assert.is(RX_DESC_LEN, 20);
});

test('transmit descriptors: the shared vectors are built byte for byte', () => {
  for (const v of vectors.tx) {
    const tx = new TxBatch();
    const q = {};
    const chunks = v.chunks.map((c: { source: string; ref: number; offset: number; len: number }) =>
      c.source === 'queue' ? { queue: q, offset: c.offset, len: c.len } : { frame: c.ref, offset: c.offset, len: c.len },
    );
    tx.frame(unhex(v.head), v.offload as Offload, chunks);
    assert.equal(Array.from(tx.bytes()), Array.from(unhex(v.bytes)), v.name);
    assert.is(tx.count, 1);
    assert.is(tx.queues.length, v.chunks.some((c: { source: string }) => c.source === 'queue') ? 1 : 0);
  }
});

test('transmit batches name each queue once and grow past their first buffer', () => {
  const tx = new TxBatch();
  const a = {};
  const b = {};
  for (let i = 0; i < 200; i++) tx.frame(new Uint8Array(54), NO_OFFLOAD, [{ queue: i % 2 ? a : b, offset: i, len: 10 }]);
  assert.is(tx.count, 200);
  assert.equal(tx.queues, [b, a]);
  assert.is(tx.byteLength, 200 * (14 + 54 + 20));
  tx.reset();
  assert.is(tx.byteLength, 0);
  assert.is(tx.queues.length, 0);
});

test('placements: the shared vector is built byte for byte', () => {
  const v = vectors.place[0];
  // The vector names queue index 1, so name another queue first.
  const p = new Placements();
  const q0 = {};
  const q1 = {};
  p.add(1, 0, 0, q0, 0);
  p.add(v.frame, v.offset, v.len, q1, v.at);
  assert.equal(Array.from(p.bytes().subarray(24)), Array.from(unhex(v.bytes)));
  assert.equal(p.queues, [q0, q1]);
  assert.is(p.count, 2);
});

test.run();
