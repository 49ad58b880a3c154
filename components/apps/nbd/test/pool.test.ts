import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { BufferPool, sizeClass } from '../src/pool.ts';

function pool(budget: number, keep = 64) {
  let next = 100;
  const open = new Map<number, number>();
  const p = new BufferPool(
    budget,
    (len) => {
      open.set(next, len);
      return next++;
    },
    (fd) => {
      assert.ok(open.delete(fd), `closing fd ${fd} twice`);
    },
    keep,
  );
  return { p, open };
}

test('size classes: powers of two from 4 KiB', () => {
  assert.is(sizeClass(1), 4096);
  assert.is(sizeClass(4096), 4096);
  assert.is(sizeClass(4097), 8192);
  assert.is(sizeClass(32 << 20), 32 << 20);
});

test('a released memfd is reused for the next request of its class', () => {
  const { p, open } = pool(1 << 20);
  const a = p.alloc(4096)!;
  p.release(a);
  const b = p.alloc(3000)!;
  assert.is(b.fd, a.fd);
  assert.is(p.created, 1);
  assert.is(p.reused, 1);
  assert.is(open.size, 1);
});

test('the budget holds: idle memfds are closed to make room, in-use ones never', () => {
  const { p, open } = pool(64 << 10);
  const small = [p.alloc(4096)!, p.alloc(4096)!, p.alloc(8192)!];
  for (const b of small) p.release(b);
  assert.is(p.total, 16 << 10);
  const big = p.alloc(64 << 10)!;
  assert.ok(big);
  assert.is(p.total, 64 << 10);
  assert.is(p.evicted, 3);
  assert.is(open.size, 1);
  // Spent on a memfd in use: the next one waits.
  assert.is(p.alloc(4096), null);
  p.release(big);
  assert.ok(p.alloc(4096));
});

test('idle memfds per class are bounded', () => {
  const { p, open } = pool(1 << 30, 2);
  const bs = [p.alloc(4096)!, p.alloc(4096)!, p.alloc(4096)!];
  for (const b of bs) p.release(b);
  assert.is(open.size, 2);
  assert.is(p.total, 8192);
  assert.is(p.inUse, 0);
});

test.run();
