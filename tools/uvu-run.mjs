// Run uvu test files (TypeScript, loaded through tsx) in one process and
// let uvu print its summary. usage: node --import tsx tools/uvu-run.mjs FILE...
//
// uvu only sets process.exitCode when it is done; a test that failed half
// way may leave a timer or a request loop behind that would keep Node
// alive for ever, so exit explicitly once the summary is out.
import { relative, resolve } from 'node:path';
import { run } from 'uvu/run';

const files = process.argv.slice(2);
await run(
  files.map((file) => ({ name: relative(process.cwd(), file), file: resolve(file) })),
  { bail: false },
);
const code = process.exitCode ?? 0;
process.stdout.write('', () => process.exit(code));
