// Run a TypeScript scenario inside QuickJS, to see where an interpreter's
// time goes in libretto's JavaScript: componentize-qjs strips function
// names, so `perf` on a component sees one interpreter loop and nothing
// inside it. This runs the same TypeScript (bundled by esbuild) in
// QuickJS compiled to WebAssembly (quickjs-emscripten, in Node's
// WebAssembly engine): a different build of the same interpreter, whose
// costs track the components' (see docs/PERFORMANCE.md).
//
// usage: node bench/qjs/run.mjs SCENARIO [N]
//   SCENARIO: ops | stack | forward (bench/qjs/SCENARIO.ts), or a path
// The scenario exports run(n): string; it may call cpuNow() (process CPU
// time in us) and hostNow() (wall time in us).
import { readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as esbuild from 'esbuild';
import { getQuickJS } from 'quickjs-emscripten';

const here = dirname(fileURLToPath(import.meta.url));
const [name, n = '0'] = process.argv.slice(2);
if (!name) {
  console.error('usage: node bench/qjs/run.mjs ops|stack|forward|FILE.ts [N]');
  process.exit(2);
}
const entry = /[./]/.test(name) ? resolve(name) : join(here, `${name}.ts`);
let code;
try {
  const r = await esbuild.build({ entryPoints: [entry], bundle: true, format: 'iife', globalName: 'Scenario', write: false, target: 'es2022', logLevel: 'silent', define: { __LIBRETTO_BACKEND__: '"quickjs"' } });
  code = r.outputFiles[0].text;
} catch (e) {
  console.error(`bench/qjs: cannot bundle ${entry}: ${e.message.split('\n')[0]}`);
  process.exit(2);
}
const QuickJS = await getQuickJS();
const vm = QuickJS.newContext();
vm.runtime.setMemoryLimit(1 << 30);
vm.runtime.setMaxStackSize(0);
for (const [fname, f] of [
  ['cpuNow', () => { const u = process.cpuUsage(); return u.user + u.system; }],
  ['hostNow', () => performance.now() * 1000],
]) {
  const h = vm.newFunction(fname, () => vm.newNumber(f()));
  vm.setProp(vm.global, fname, h);
  h.dispose();
}
const r = vm.evalCode(`${code}\n;Scenario.run(${Number(n)})`);
if (r.error) {
  console.error('bench/qjs: the scenario failed:', vm.dump(r.error));
  r.error.dispose();
  vm.dispose();
  process.exit(1);
}
console.log(vm.dump(r.value));
r.value.dispose();
vm.dispose();
