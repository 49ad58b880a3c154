// Helpers the benchmarks share.
import { spawnSync } from 'node:child_process';

/** Run a shell command; its stdout. Throws with its output if it fails, unless quiet. */
export function sh(cmd, quiet = false) {
  const r = spawnSync('sh', ['-c', cmd], { encoding: 'utf8' });
  if (r.status !== 0 && !quiet) throw new Error(`${cmd}: ${r.stderr || r.stdout}`);
  return r.stdout;
}

/** Whether a command is on PATH. */
export const has = (tool) => spawnSync('sh', ['-c', `command -v ${tool}`]).status === 0;

/** Resolves when `proc` prints something matching `re` (90 s at most). */
export function started(proc, re, what) {
  return new Promise((ok, fail) => {
    let out = '';
    const timer = setTimeout(() => fail(new Error(`${what} did not start: ${out}`)), 90_000);
    const on = (d) => {
      out += d;
      if (re.test(out)) {
        clearTimeout(timer);
        ok();
      }
    };
    proc.stdout.on('data', on);
    proc.stderr.on('data', on);
  });
}
