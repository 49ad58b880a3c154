// Run uvu test files (TypeScript, loaded through tsx) in one process and
// let uvu print its summary. usage: node --import tsx tools/uvu-run.mjs FILE...
import { relative, resolve } from 'node:path';
import { run } from 'uvu/run';

const files = process.argv.slice(2);
await run(
  files.map((file) => ({ name: relative(process.cwd(), file), file: resolve(file) })),
  { bail: false },
);
