import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { checkBlock, cycleBlocks, fillBlock } from '../src/pattern.ts';

test('a filled block checks as its own lba and generation, at values past 2^32', () => {
  const b = new Uint8Array(4096);
  fillBlock(b, 2 ** 33 + 5, 2 ** 40 + 7);
  assert.equal(checkBlock(b), { lba: 2 ** 33 + 5, gen: 2 ** 40 + 7 });
});

test('a torn, shifted or empty block does not check', () => {
  const b = new Uint8Array(4096);
  fillBlock(b, 10, 3);
  const torn = b.slice();
  torn.set(new Uint8Array(512), 2048);
  assert.is(checkBlock(torn), null);
  const other = new Uint8Array(4096);
  fillBlock(other, 10, 4);
  const mixed = b.slice();
  mixed.set(other.subarray(512), 512);
  assert.is(checkBlock(mixed), null);
  assert.is(checkBlock(new Uint8Array(4096)), null);
});

test('a cycle writes distinct blocks inside the namespace, the same ones every time', () => {
  const a = cycleBlocks(12345, 16, 2048);
  assert.is(new Set(a).size, 16);
  assert.ok(a.every((x) => x >= 0 && x < 2048));
  assert.equal(cycleBlocks(12345, 16, 2048), a);
  assert.not.equal(cycleBlocks(12346, 16, 2048), a);
  assert.is(cycleBlocks(1, 16, 4).length, 4);
});

test.run();
