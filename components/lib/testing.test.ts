import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { runner, test as register, assertEq, deepEqual, Skip } from './testing.ts';

register('passes', () => assertEq(1n + 1n, 2n, 'bigint sum'));
register('fails with the assertion message', () => assertEq(new Uint8Array([1, 2]), new Uint8Array([1, 3]), 'bytes'));
register('skips', () => {
  throw new Skip('not here');
});

test('the runner lists tests in registration order', () => {
  assert.equal(runner.listTests(), ['passes', 'fails with the assertion message', 'skips']);
});

test('outcomes carry pass, fail with message, and skip', () => {
  assert.equal(runner.runTest('passes'), { tag: 'pass' });
  const f = runner.runTest('fails with the assertion message');
  assert.is(f.tag, 'fail');
  assert.match((f as { val: string }).val, /^bytes: expected bytes\[2\]\(01 03\), got bytes\[2\]\(01 02\)/);
  assert.equal(runner.runTest('skips'), { tag: 'skip', val: 'not here' });
  assert.equal(runner.runTest('no such test'), { tag: 'fail', val: 'no test named "no such test"' });
});

test('deepEqual compares bytes, bigints and nested objects', () => {
  assert.ok(deepEqual({ a: [1n, new Uint8Array([9])] }, { a: [1n, new Uint8Array([9])] }));
  assert.not.ok(deepEqual({ a: 1 }, { a: 1, b: undefined }));
  assert.not.ok(deepEqual(1n, 1));
});

test.run();
