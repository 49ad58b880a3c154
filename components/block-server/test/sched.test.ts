import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { check, translate, Scheduler, type Grant, type Request, type Status, type DeviceCommand } from '../src/sched.ts';

const g4k: Grant = { app: 1, name: 'a', nsid: 1, blockSize: 4096, blocks: 2 ** 40, readOnly: false, maxTransferBlocks: 256, firstLba: 2048 };
const ro: Grant = { ...g4k, app: 2, name: 'b', readOnly: true, blocks: 100 };

function r(over: Partial<Request>): Request {
  return { app: 1, tag: 1, opcode: 'read', nsid: 1, slba: 0, nlb: 1, fua: false, bufferLen: 4096, ...over };
}

test('check: every refusal, at the edges', () => {
  assert.is(check(r({}), g4k), null);
  assert.is(check(r({ opcode: 'bogus' as never }), g4k), 'invalid-opcode');
  assert.is(check(r({}), undefined), 'invalid-namespace');
  assert.is(check(r({ nlb: 0 }), g4k), 'invalid-field');
  assert.is(check(r({ nlb: 256, bufferLen: 256 * 4096 }), g4k), null);
  assert.is(check(r({ nlb: 257, bufferLen: 257 * 4096 }), g4k), 'invalid-field');
  assert.is(check(r({ bufferLen: 4095 }), g4k), 'invalid-field');
  // The last block is in range; one past it is not; slba beyond 2^53 is out of range too.
  assert.is(check(r({ slba: 2 ** 40 - 1 }), g4k), null);
  assert.is(check(r({ slba: 2 ** 40 }), g4k), 'lba-out-of-range');
  assert.is(check(r({ slba: 2 ** 40 - 1, nlb: 2, bufferLen: 8192 }), g4k), 'lba-out-of-range');
  assert.is(check(r({ slba: 2 ** 64 }), g4k), 'lba-out-of-range');
  assert.is(check(r({ app: 2, opcode: 'write' }), ro), 'write-to-read-only');
  assert.is(check(r({ app: 2, opcode: 'write-zeroes', bufferLen: 0 }), ro), 'write-to-read-only');
  assert.is(check(r({ app: 2, opcode: 'deallocate' }), ro), 'write-to-read-only');
  assert.is(check(r({ app: 2, opcode: 'read' }), ro), null);
  assert.is(check(r({ app: 2, opcode: 'flush', nlb: 0 }), ro), null);
  // Write zeroes and trim move no data: no buffer needed.
  assert.is(check(r({ opcode: 'write-zeroes', bufferLen: 0, nlb: 8 }), g4k), null);
});

test('translate: namespace blocks to device blocks', () => {
  assert.equal(translate(r({ slba: 3, nlb: 2 }), g4k, 512), { tag: 1, slba: 2048 + 24, nlb: 16 });
  assert.equal(translate(r({ slba: 3, nlb: 2 }), g4k, 4096), { tag: 1, slba: 2051, nlb: 2 });
  assert.equal(translate(r({ opcode: 'flush' }), g4k, 512), { tag: 1, slba: 0, nlb: 0 });
});

test('scheduler: refused at once, the rest within the device depth', () => {
  const s = new Scheduler(512, 4);
  s.setGrants([g4k]);
  const refuse: [number, Status][] = [];
  s.admit([r({ tag: 10 }), r({ tag: 11, nsid: 9 }), r({ tag: 12 }), r({ tag: 13 }), r({ tag: 14 }), r({ tag: 15 })], 0, refuse);
  assert.equal(refuse, [[11, 'invalid-namespace']]);
  const out: DeviceCommand[] = [];
  s.dispatch(out);
  assert.equal(out.map((c) => c.tag), [10, 12, 13, 14]);
  assert.is(s.inflight, 4);
  out.length = 0;
  s.dispatch(out);
  assert.is(out.length, 0, 'nothing more while the device is full');
  s.completed([{ tag: 12, status: 'success' }], 1000);
  s.dispatch(out);
  assert.equal(out.map((c) => c.tag), [15]);
  const st = s.statsOf(1);
  assert.is(st.refused, 1);
  assert.is(st.readBytes, 4096);
});

test('scheduler: deficit round robin keeps a small-I/O app from being starved', () => {
  const big: Grant = { ...g4k, app: 1, name: 'big' };
  const small: Grant = { ...g4k, app: 2, name: 'small' };
  // The device has room for 40 commands: the small app must get most of them.
  const s = new Scheduler(512, 40, 128 << 10);
  s.setGrants([big, small]);
  const reqs: Request[] = [];
  let tag = 1;
  for (let i = 0; i < 64; i++) reqs.push(r({ app: 1, tag: tag++, nlb: 256, bufferLen: 1 << 20 })); // 1 MiB each
  for (let i = 0; i < 64; i++) reqs.push(r({ app: 2, tag: tag++, nlb: 1 }));
  s.admit(reqs, 0, []);
  const out: DeviceCommand[] = [];
  s.dispatch(out);
  const smalls = out.filter((c) => c.tag > 64).length;
  assert.is(out.length, 40);
  assert.ok(smalls >= 32, `small app got ${smalls} of 40`);
});

test('scheduler: an app alone uses the whole depth', () => {
  const s = new Scheduler(512, 16);
  s.setGrants([g4k]);
  const reqs = Array.from({ length: 20 }, (_, i) => r({ tag: i + 1, nlb: 256, bufferLen: 1 << 20 }));
  s.admit(reqs, 0, []);
  const out: DeviceCommand[] = [];
  s.dispatch(out);
  assert.is(out.length, 16);
});

test('scheduler: counters name the app', () => {
  const s = new Scheduler(512, 4);
  s.setGrants([g4k]);
  s.admit([r({ tag: 1, opcode: 'write' })], 0, []);
  const out: DeviceCommand[] = [];
  s.dispatch(out);
  s.completed([{ tag: 1, status: 'internal-error' }], 5000);
  const c = new Map(s.counters());
  assert.is(c.get('app.a.writes'), 1);
  assert.is(c.get('app.a.errors'), 1);
  assert.is(c.get('app.a.write.bytes'), 0);
  assert.is(c.get('app.a.latency.us.max'), 5);
});

test.run();
