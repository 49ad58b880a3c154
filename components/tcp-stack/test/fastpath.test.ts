/**
 * The receive fast path (Stack.receiveFast) against the general path: the
 * same seeded transfers, with loss, duplication and reordering, put the
 * same frames on the wire, byte for byte, in the same order, and end with
 * the same counters, whether the fast path is on or off; and it is taken
 * for most segments when on.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { bulk } from './bulk.ts';
import type { Wire } from './harness.ts';

/** FNV-1a over a frame: a cheap fingerprint to compare long traces. */
function fingerprint(b: Uint8Array): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < b.length; i++) h = Math.imul(h ^ b[i], 0x01000193) >>> 0;
  return h;
}

function traced(fast: boolean, seed: number, loss: number) {
  const trace: string[] = [];
  const observe = (w: Wire) => w.taps.push((from, bytes) => trace.push(`${from.name}:${bytes.length}:${fingerprint(bytes)}`));
  const r = bulk({ seed, loss, duplicate: loss ? 0.01 : 0, reorder: loss ? 0.02 : 0, delayNs: 100_000 }, 256 << 10, (c) => (c.fastPath = fast), 600e9, observe);
  return { r, trace };
}

for (const [loss, seed] of [[0, 21], [0.01, 22], [0.05, 23]] as const) {
  test(`fast path on and off give the same frames and counters: 256 KiB each way at ${loss * 100}% loss (seed ${seed})`, () => {
    const slow = traced(false, seed, loss);
    const fast = traced(true, seed, loss);
    assert.ok(slow.r.ok, slow.r.why);
    assert.ok(fast.r.ok, fast.r.why);
    assert.is(slow.r.rxFast, 0);
    assert.ok(fast.r.rxFast > slow.trace.length / 4, `the fast path took ${fast.r.rxFast} of ${slow.trace.length} frames`);
    assert.is(fast.trace.length, slow.trace.length, 'as many frames');
    const i = fast.trace.findIndex((x, k) => x !== slow.trace[k]);
    assert.is(i, -1, `frame ${i} differs: ${fast.trace[i]} vs ${slow.trace[i]}`);
    assert.equal(fast.r.counters, slow.r.counters);
  });
}

test.run();
