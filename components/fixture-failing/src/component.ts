/**
 * A fixture for the integration tests: one test passes, one fails, one
 * traps. It proves that `libretto test` names a failing test, counts it and
 * turns its exit status; it is not part of the component suite.
 */
import { runner, test, assertEq } from '../../lib/testing.ts';

export { runner };

test('passes', () => assertEq(2 + 2, 4, 'sum'));
test('fails on purpose', () => assertEq(2 + 2, 5, 'deliberately wrong sum'));
test('traps on purpose', () => {
  // An unbounded recursion exhausts the engine's stack: a real trap or a
  // thrown RangeError, depending on the engine; either way, a failure.
  const f = (n: number): number => f(n + 1) + 1;
  f(0);
});
