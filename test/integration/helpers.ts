import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = resolve(fileURLToPath(new URL('../..', import.meta.url)));
export const BIN = join(ROOT, 'bin', 'libretto');
export const COMPONENTS = join(ROOT, 'build', 'components');

export interface Ran {
  status: number | null;
  stdout: string;
  stderr: string;
}

/** Run a command to completion with a time limit. */
export function run(cmd: string, args: string[], opts: { timeoutMs?: number; cwd?: string } = {}): Ran {
  const r = spawnSync(cmd, args, { cwd: opts.cwd ?? ROOT, encoding: 'utf8', timeout: opts.timeoutMs ?? 120_000 });
  if (r.error) throw r.error;
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

export function component(name: string): string {
  const p = join(COMPONENTS, name);
  if (!existsSync(p)) throw new Error(`${p} is missing: run make components`);
  return p;
}
