// Run every test suite and print one tally over all of them.
//
// Suites: TypeScript unit tests (uvu), Rust tests (cargo test), component
// tests inside wasmtime (bin/libretto test), integration tests (uvu, driving
// bin/libretto and the built components). Each suite's output streams
// through; its counts are read from its own summary. A suite that fails to
// report counts, or exits non-zero, counts as a failure.
//
// The last line is always `N passed, N failed`; the exit status is non-zero
// if anything failed.
//
// usage: node tools/test-all.mjs [--only SUITE]
import { spawn } from 'node:child_process';
import { readdirSync, existsSync, statSync } from 'node:fs';
import { join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(fileURLToPath(new URL('..', import.meta.url)));

function findFiles(dir, pattern, out = []) {
  if (!existsSync(dir)) return out;
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    if (entry.name === 'node_modules' || entry.name.startsWith('.')) continue;
    const p = join(dir, entry.name);
    if (entry.isDirectory()) findFiles(p, pattern, out);
    else if (pattern.test(entry.name)) out.push(p);
  }
  return out.sort();
}

/** Counts from uvu's summary (`Passed: N`, `Total: N`, `Skipped: N`). */
function uvuCounts(text) {
  const total = /Total:\s+(\d+)/.exec(text);
  const passed = /Passed:\s+(\d+)/.exec(text);
  const skipped = /Skipped:\s+(\d+)/.exec(text);
  if (!total || !passed) return null;
  const t = Number(total[1]);
  const p = Number(passed[1]);
  const s = skipped ? Number(skipped[1]) : 0;
  return { passed: p, failed: t - p - s, skipped: s };
}

/** Counts from `cargo test` (`test result: ok. N passed; M failed; K ignored`). */
function cargoCounts(text) {
  let passed = 0;
  let failed = 0;
  let skipped = 0;
  let seen = false;
  for (const m of text.matchAll(/test result: \w+\. (\d+) passed; (\d+) failed; (\d+) ignored/g)) {
    seen = true;
    passed += Number(m[1]);
    failed += Number(m[2]);
    skipped += Number(m[3]);
  }
  return seen ? { passed, failed, skipped } : null;
}

/** Counts from `libretto test` (`N passed, M failed`, `K skipped`). */
function librettoCounts(text) {
  const m = /^(\d+) passed, (\d+) failed\s*$/m.exec(text);
  if (!m) return null;
  const s = /^(\d+) skipped\s*$/m.exec(text);
  return { passed: Number(m[1]), failed: Number(m[2]), skipped: s ? Number(s[1]) : 0 };
}

const uvuBin = join(root, 'node_modules', 'uvu', 'bin.js');
const node = process.execPath;
const tsxImport = ['--import', 'tsx'];

function uvuSuite(name, dir) {
  const files = findFiles(join(root, dir), /\.test\.ts$/);
  return {
    name,
    // uvu's CLI takes a directory and a pattern; run it once over the files.
    cmd: [node, ...tsxImport, join(root, 'tools', 'uvu-run.mjs'), ...files],
    counts: uvuCounts,
    empty: files.length === 0,
  };
}

function componentTestFiles() {
  const dir = join(root, 'build', 'components');
  if (!existsSync(dir)) return [];
  // Every build of every component with tests, on each engine built.
  return readdirSync(dir)
    .filter((f) => /-tests\.(starlingmonkey|quickjs)\.wasm$/.test(f))
    .map((f) => join(dir, f))
    .sort();
}

const suites = [
  uvuSuite('typescript', 'components'),
  {
    name: 'rust',
    cmd: ['cargo', 'test', '--release', '--quiet'],
    cwd: join(root, 'host'),
    counts: cargoCounts,
  },
  {
    name: 'components',
    cmd: [join(root, 'bin', 'libretto'), 'test', ...componentTestFiles()],
    counts: librettoCounts,
    empty: componentTestFiles().length === 0,
  },
  uvuSuite('integration', 'test/integration'),
  // A suite that always fails, for the test that proves a failure turns the
  // tally and the exit status. Run only when asked for by name.
  { name: 'fixture-fail', cmd: [node, '-e', 'console.log("0 passed, 1 failed"); process.exit(1)'], counts: librettoCounts, hidden: true },
];

/** The most a suite may take before it is killed and counted as failed. */
const SUITE_LIMIT_S = Number(process.env.LIBRETTO_SUITE_LIMIT_S ?? 45 * 60);

function run(suite) {
  return new Promise((resolvePromise) => {
    const started = Date.now();
    const shown = (a) => (a.startsWith(root + '/') ? relative(root, a) : a);
    console.log(`\n== ${suite.name}: ${suite.cmd.map(shown).join(' ')}`);
    // A process group of its own, so that whatever a suite leaves running
    // (a system a failed test did not stop) is killed with it and cannot
    // hold the output pipes open.
    const child = spawn(suite.cmd[0], suite.cmd.slice(1), {
      cwd: suite.cwd ?? root,
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, FORCE_COLOR: '0' },
      detached: true,
    });
    const killGroup = () => {
      try {
        process.kill(-child.pid, 'SIGKILL');
      } catch {
        // already gone
      }
    };
    let timedOut = false;
    const limit = setTimeout(() => {
      timedOut = true;
      console.log(`\n== ${suite.name}: still running after ${SUITE_LIMIT_S} s; killed`);
      killGroup();
    }, SUITE_LIMIT_S * 1000);
    child.on('exit', () => {
      clearTimeout(limit);
      // Its leftovers go with it; give the pipes a moment to drain.
      setTimeout(killGroup, 2000);
    });
    process.on('exit', killGroup);
    let text = '';
    child.stdout.on('data', (d) => {
      text += d;
      process.stdout.write(d);
    });
    child.stderr.on('data', (d) => {
      text += d;
      process.stderr.write(d);
    });
    child.on('error', (e) => {
      text += `\ncould not start: ${e.message}`;
    });
    child.on('close', (code) => {
      const secs = ((Date.now() - started) / 1000).toFixed(1);
      let counts = suite.counts(text);
      if (timedOut) {
        counts = { passed: counts?.passed ?? 0, failed: (counts?.failed ?? 0) + 1, skipped: counts?.skipped ?? 0 };
      } else if (!counts) {
        console.log(`== ${suite.name}: reported no counts (exit ${code}); counted as one failure`);
        counts = { passed: 0, failed: 1, skipped: 0 };
      } else if (code !== 0 && counts.failed === 0) {
        console.log(`== ${suite.name}: exited ${code} with no failed test; counted as one failure`);
        counts.failed = 1;
      }
      console.log(`== ${suite.name}: ${counts.passed} passed, ${counts.failed} failed, ${counts.skipped} skipped (${secs} s)`);
      resolvePromise({ name: suite.name, ...counts });
    });
  });
}

async function main() {
  const args = process.argv.slice(2);
  let chosen = suites.filter((s) => !s.hidden);
  if (args[0] === '--only') {
    chosen = suites.filter((s) => s.name === args[1]);
    if (chosen.length === 0) {
      console.error(`test-all: no suite named "${args[1]}" (have ${suites.map((s) => s.name).join(', ')})`);
      process.exit(2);
    }
  }
  const results = [];
  for (const suite of chosen) {
    if (suite.empty) {
      console.log(`\n== ${suite.name}: no tests found; counted as one failure`);
      results.push({ name: suite.name, passed: 0, failed: 1, skipped: 0 });
      continue;
    }
    results.push(await run(suite));
  }
  const passed = results.reduce((n, r) => n + r.passed, 0);
  const failed = results.reduce((n, r) => n + r.failed, 0);
  const skipped = results.reduce((n, r) => n + r.skipped, 0);
  console.log('\n== summary');
  for (const r of results) console.log(`   ${r.name.padEnd(12)} ${r.passed} passed, ${r.failed} failed, ${r.skipped} skipped`);
  console.log(`${passed} passed, ${failed} failed`);
  process.exit(failed > 0 ? 1 : 0);
}

await main();
