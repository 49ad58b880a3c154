// Componentize one bundled JavaScript file. Run as a child process by
// build-components.mjs, so that two builds can run at once and a crash in a
// backend cannot take the build script down with it.
//
// usage: node tools/componentize-one.mjs JOB.json
//   JOB = { backend, bundle, witPath, world, out }
import { readFile, writeFile } from 'node:fs/promises';

// preview2-shim 0.26.1 starts with no filesystem preopens, so the wasm-tools
// inside componentize-js cannot read the WIT (TOOLCHAIN.md). Give it '/'.
import { _setPreopens } from '@bytecodealliance/preview2-shim/filesystem';
_setPreopens({ '/': '/' });

const job = JSON.parse(await readFile(process.argv[2], 'utf8'));
let bytes;
if (job.backend === 'starlingmonkey') {
  const { componentize } = await import('@bytecodealliance/componentize-js');
  const result = await componentize({
    sourcePath: job.bundle,
    witPath: job.witPath,
    worldName: job.world,
    // Keep stdio (console output reaches the host's log), clocks and random.
    disableFeatures: ['http', 'fetch-event'],
  });
  bytes = result.component;
} else if (job.backend === 'quickjs') {
  const { componentize } = await import('componentize-qjs');
  const result = await componentize({
    witPath: job.witPath,
    jsSource: await readFile(job.bundle, 'utf8'),
    jsPath: job.bundle,
    world: job.world,
    // The host calls exports through wasmtime's synchronous API.
    sync: true,
  });
  bytes = result.component;
} else {
  console.error(`unknown backend "${job.backend}" (expected starlingmonkey or quickjs)`);
  process.exit(2);
}
await writeFile(job.out, bytes);
