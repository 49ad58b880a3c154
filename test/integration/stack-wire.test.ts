/**
 * Two TCP/IP stacks (the netapp component, inside wasmtime) on the host's
 * in-memory wire: 64 MiB each way (sent, echoed back) byte-exact at 0%, 1%
 * and 5% loss with reordering and duplication. Each run prints its seed;
 * `bin/libretto wire --seed N ...` replays the same impairment sequence.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { BIN, component, run } from './helpers.ts';

const MIB64 = 64 << 20;

for (const [loss, seed] of [[0, 101], [0.01, 102], [0.05, 103]] as const) {
  test(`64 MiB each way byte-exact at ${loss * 100}% loss (seed ${seed})`, () => {
    const impair = loss ? ['--loss', String(loss), '--dup', '0.01', '--reorder', '0.02'] : [];
    const app = component('netapp.wasm');
    const args = ['wire', '--seed', String(seed), ...impair, '--seconds', '600',
      '--app', app, 'ip=10.0.0.1/24', 'echo=7',
      '--app', app, 'ip=10.0.0.2/24', 'connect=10.0.0.1:7', `send=${MIB64}`, 'exit=done', 'expect=echo'];
    const r = run(BIN, args, { timeoutMs: 660_000 });
    const out = r.stdout + r.stderr;
    console.log(`    seed ${seed}, loss ${loss}: ${out.split('\n').find((l) => l.startsWith('wire:'))}`);
    assert.is(r.status, 0, out);
    assert.match(out, new RegExp(`echo check: verified: ${MIB64} of ${MIB64} bytes came back identical`));
    if (loss > 0) assert.match(out, /wire: .* [1-9]\d* lost, [1-9]\d* duplicated, [1-9]\d* reordered/);
  });
}

test.run();
