import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { buildDemoHeader, checkDemoFrame, demoLen, demoOffset, demoPattern, DEMO_HEADER_LEN, DEMO_SIZES } from './demo-frames.ts';

function frame(seq: number): Uint8Array {
  const pattern = demoPattern();
  const len = demoLen(seq);
  const f = new Uint8Array(len);
  f.set(buildDemoHeader(seq, 0xffff_ffff_ffff, 0x0200_0000_0001));
  f.set(pattern.subarray(demoOffset(seq), demoOffset(seq) + len - DEMO_HEADER_LEN), DEMO_HEADER_LEN);
  return f;
}

test('a well-formed demo frame checks out with its sequence number', () => {
  const pattern = demoPattern();
  for (const seq of [0, 1, 2, 3, 250, 251, 0xffff_ffff]) {
    const f = frame(seq);
    assert.is(checkDemoFrame(f.subarray(0, 128), f.length, pattern), seq);
  }
});

test('a changed body byte, a wrong length or a wrong EtherType is caught', () => {
  const pattern = demoPattern();
  const f = frame(5);
  const bad = f.slice();
  bad[DEMO_HEADER_LEN + 3] ^= 1;
  assert.is(checkDemoFrame(bad, bad.length, pattern), -1, 'body byte');
  assert.is(checkDemoFrame(f, f.length + 1, pattern), -1, 'length');
  const other = f.slice();
  other[12] = 0x08;
  other[13] = 0x00;
  assert.is(checkDemoFrame(other, other.length, pattern), -1, 'EtherType');
  assert.is(checkDemoFrame(f.subarray(0, 10), f.length, pattern), -1, 'truncated head');
});

test('sizes cover the minimum frame and the full MTU, and bodies fit the pattern', () => {
  assert.is(Math.min(...DEMO_SIZES), 60);
  assert.is(Math.max(...DEMO_SIZES), 1514);
  for (let seq = 0; seq < 1000; seq++) {
    assert.ok(demoOffset(seq) + demoLen(seq) - DEMO_HEADER_LEN <= demoPattern().length);
  }
});

test.run();
