/**
 * A small test registry for components that export `libretto:test/runner`.
 *
 * Tests register with `test(name, fn)`; the host lists them and runs each
 * inside wasmtime. A thrown error becomes a `fail` outcome carrying its
 * message, so the host prints which assertion failed.
 */

export type Outcome = { tag: 'pass' } | { tag: 'fail'; val: string } | { tag: 'skip'; val: string };

/** Thrown by a test to say it cannot run here. */
export class Skip extends Error {}

const tests = new Map<string, () => void>();

/** Register a test. Names must be unique within a component. */
export function test(name: string, fn: () => void): void {
  if (tests.has(name)) throw new Error(`duplicate test name: ${name}`);
  tests.set(name, fn);
}

function describe(value: unknown): string {
  if (typeof value === 'bigint') return `${value}n`;
  if (value instanceof Uint8Array) {
    const shown = Array.from(value.subarray(0, 16), (b) => b.toString(16).padStart(2, '0')).join(' ');
    return `bytes[${value.length}](${shown}${value.length > 16 ? ' ...' : ''})`;
  }
  try {
    return JSON.stringify(value, (_k, v) => (typeof v === 'bigint' ? `${v}n` : v instanceof Uint8Array ? describe(v) : v));
  } catch {
    return String(value);
  }
}

/** Fail unless `cond` holds. */
export function assert(cond: unknown, what: string): asserts cond {
  if (!cond) throw new Error(what);
}

/** Fail unless `actual` and `expected` are deeply equal (bigints, bytes, objects). */
export function assertEq(actual: unknown, expected: unknown, what: string): void {
  if (!deepEqual(actual, expected)) {
    throw new Error(`${what}: expected ${describe(expected)}, got ${describe(actual)}`);
  }
}

/** Fail unless `fn` throws; returns what it threw. */
export function assertThrows(fn: () => unknown, what: string): unknown {
  try {
    fn();
  } catch (e) {
    return e;
  }
  throw new Error(`${what}: expected an error, none was thrown`);
}

export function deepEqual(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (typeof a !== typeof b) return false;
  if (a instanceof Uint8Array && b instanceof Uint8Array) {
    if (a.length !== b.length) return false;
    for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
    return true;
  }
  if (Array.isArray(a) && Array.isArray(b)) {
    return a.length === b.length && a.every((x, i) => deepEqual(x, b[i]));
  }
  if (a && b && typeof a === 'object') {
    const ka = Object.keys(a as object);
    const kb = Object.keys(b as object);
    return ka.length === kb.length && ka.every((k) => deepEqual((a as any)[k], (b as any)[k]));
  }
  return false;
}

/** The `libretto:test/runner` export. */
export const runner = {
  listTests(): string[] {
    return [...tests.keys()];
  },
  runTest(name: string): Outcome {
    const fn = tests.get(name);
    if (!fn) return { tag: 'fail', val: `no test named "${name}"` };
    try {
      fn();
      return { tag: 'pass' };
    } catch (e) {
      if (e instanceof Skip) return { tag: 'skip', val: e.message };
      const message = e instanceof Error ? e.message : describe(e);
      return { tag: 'fail', val: message || 'threw an error without a message' };
    }
  },
};
