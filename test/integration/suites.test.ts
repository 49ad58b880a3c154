/**
 * The test command's own contract: a failing suite turns the last line and
 * the exit status; `libretto run` (the main job) boots and reports.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { BIN, ROOT, run } from './helpers.ts';
import { join } from 'node:path';

test('a failing suite turns the tally line and the exit status', () => {
  const r = run(process.execPath, [join(ROOT, 'tools', 'test-all.mjs'), '--only', 'fixture-fail']);
  assert.is(r.status, 1);
  assert.is(r.stdout.trim().split('\n').pop(), '0 passed, 1 failed');
});

test('an unknown suite name is refused with exit 2', () => {
  const r = run(process.execPath, [join(ROOT, 'tools', 'test-all.mjs'), '--only', 'no-such-suite']);
  assert.is(r.status, 2);
  assert.match(r.stderr, /no suite named "no-such-suite"/);
});

test('libretto run boots two components that exchange 20,000 frames over host rings', () => {
  const r = run(BIN, ['run'], { timeoutMs: 120_000 });
  assert.is(r.status, 0, r.stdout + r.stderr);
  assert.match(r.stdout, /ring sender -> reflector\s+20000 frames in,\s+20000 out/);
  assert.match(r.stdout, /ring reflector -> sender\s+20000 frames in,\s+20000 out/);
  assert.match(r.stdout, /rx\.frames=20000 .*rx\.bad=0 rx\.out-of-order=0/);
  assert.match(r.stdout, /20000 frames went out and came back/);
});

test('libretto run with a missing components directory says so and exits 2', () => {
  const r = run(BIN, ['run', '--components', '/nonexistent/dir']);
  assert.is(r.status, 2);
  assert.match(r.stderr, /\/nonexistent\/dir\/demo-sender\.wasm: no such file/);
});

test('unknown commands and arguments get the usage and exit 2', () => {
  const r = run(BIN, ['frobnicate']);
  assert.is(r.status, 2);
  assert.match(r.stderr, /unknown command `frobnicate`/);
  const r2 = run(BIN, ['run', '--bogus']);
  assert.is(r2.status, 2);
  assert.match(r2.stderr, /unknown argument `--bogus`/);
});

test.run();
