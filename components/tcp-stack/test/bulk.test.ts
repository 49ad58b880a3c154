import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { bulk } from './bulk.ts';

for (const [loss, seed] of [[0, 11], [0.01, 12], [0.05, 13]] as const) {
  test(`1 MiB each way, byte-exact, at ${loss * 100}% loss with reordering and duplication (seed ${seed})`, () => {
    const r = bulk({ seed, loss, duplicate: loss ? 0.01 : 0, reorder: loss ? 0.02 : 0, delayNs: 100_000 }, 1 << 20);
    assert.ok(r.ok, `${r.why} (replay: seed ${seed}) ${JSON.stringify(r.wire)}`);
    if (loss > 0) assert.ok(r.wire.dropped > 0, 'the wire dropped frames');
  });
}

test.run();
