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

/**
 * nginx's configuration for the benchmarks: `workers` workers serving
 * `root` on `listen` (ADDRESS:PORT), files by sendfile, keep-alive without
 * a request limit, its state under `dir`, errors to `errorLog`.
 */
export function nginxConf({ dir, workers, listen, root, errorLog }) {
  return `daemon off;
master_process on;
worker_processes ${workers};
user root;
pid ${dir}/nginx.pid;
error_log ${errorLog} warn;
events { worker_connections 1024; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  tcp_nodelay on;
  keepalive_timeout 65;
  keepalive_requests 100000000;
  default_type application/octet-stream;
  client_body_temp_path ${dir}/body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;
  server { listen ${listen}; root ${root}; }
}
`;
}
