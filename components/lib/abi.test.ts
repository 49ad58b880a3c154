import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { BACKEND, num, u32, u32in, u64 } from './abi.ts';

// Under Node the helpers behave as for StarlingMonkey: u64 is a BigInt.
test('outside a component the backend is node and u64 is a BigInt', () => {
  assert.is(BACKEND, 'node');
  assert.is(u64(2 ** 53), 2n ** 53n);
  assert.is(num(2n ** 53n), 2 ** 53);
});

test('u32 helpers keep values at and above 2^31 unsigned', () => {
  for (const x of [0, 2 ** 31 - 1, 2 ** 31, 2 ** 32 - 1]) {
    assert.is(u32(x), x);
    assert.is(u32in(x | 0), x, 'a value that arrives as i32 bits reads back unsigned');
  }
});

test.run();
