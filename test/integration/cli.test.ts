/**
 * `bin/libretto test` from the outside: bad input gets one clear line and
 * exit 2; a failing component test is named, counted and turns the status.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, writeFileSync, mkdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BIN, component, run } from './helpers.ts';

const dir = mkdtempSync(join(tmpdir(), 'libretto-cli-'));

function badInput(file: string, pattern: RegExp) {
  const r = run(BIN, ['test', file]);
  assert.is(r.status, 2, `exit status for ${file}: ${r.stderr}`);
  const lines = r.stderr.trim().split('\n');
  assert.is(lines.length, 1, `one line, got: ${r.stderr}`);
  assert.ok(lines[0].includes(file), `the line names the file: ${lines[0]}`);
  assert.match(lines[0], pattern);
  assert.not.match(r.stderr, /panicked|RUST_BACKTRACE/);
}

test('a missing file', () => badInput(join(dir, 'nope.wasm'), /no such file/));

test('a directory', () => {
  const d = join(dir, 'adir.wasm');
  mkdirSync(d);
  badInput(d, /is a directory/);
});

test('a text file', () => {
  const f = join(dir, 'text.wasm');
  writeFileSync(f, 'hello, not wasm\n');
  badInput(f, /not a WebAssembly file/);
});

test('a core module instead of a component', () => {
  const f = join(dir, 'core.wasm');
  writeFileSync(f, Buffer.from([0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00]));
  badInput(f, /core WebAssembly module, not a component/);
});

test('a corrupt component', () => {
  const f = join(dir, 'corrupt.wasm');
  writeFileSync(f, Buffer.from([0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00, 0x07, 0xff, 0xff, 0xff, 0x01, 0x02]));
  badInput(f, /not a valid component/);
});

test('a truncated component', () => {
  const whole = readFileSync(component('demo-reflector.quickjs.wasm'));
  const f = join(dir, 'truncated.wasm');
  writeFileSync(f, whole.subarray(0, whole.length >> 1));
  badInput(f, /not a valid component/);
});

test('a component without the test world', () => badInput(component('demo-reflector.quickjs.wasm'), /does not export libretto:test\/runner/));

test('no files at all', () => {
  const r = run(BIN, ['test']);
  assert.is(r.status, 2);
  assert.match(r.stderr, /give one or more component files/);
});

test('bad input is reported before any test runs, and names every bad file', () => {
  const r = run(BIN, ['test', component('boundary-tests.quickjs.wasm'), join(dir, 'missing-a.wasm'), join(dir, 'missing-b.wasm')]);
  assert.is(r.status, 2);
  assert.is(r.stdout, '', 'nothing ran');
  assert.match(r.stderr, /missing-a\.wasm: no such file/);
  assert.match(r.stderr, /missing-b\.wasm: no such file/);
});

test('a failing component test is named, counted and turns the exit status', () => {
  const r = run(BIN, ['test', component('fixture-failing.wasm')]);
  assert.is(r.status, 1, r.stdout + r.stderr);
  assert.match(r.stdout, /ok {4}fixture-failing\.wasm :: passes/);
  assert.match(r.stdout, /FAIL {2}fixture-failing\.wasm :: fails on purpose: deliberately wrong sum: expected 5, got 4/);
  assert.match(r.stdout, /FAIL {2}fixture-failing\.wasm :: traps on purpose/);
  const last = r.stdout.trim().split('\n').pop();
  assert.is(last, '1 passed, 2 failed');
});

test('the same component passes when only good components are given', () => {
  const r = run(BIN, ['test', component('boundary-tests.quickjs.wasm')]);
  assert.is(r.status, 0, r.stdout + r.stderr);
  assert.match(r.stdout.trim().split('\n').pop()!, /^\d+ passed, 0 failed$/);
});

test.run();
