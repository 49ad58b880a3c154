// The benchmark client: measures one peer (libretto over TAP, or Linux
// over veth) with the same code.
//
// usage: node bench/stack-client.mjs IP BYTES PINGS [all|bulk|latency|rate]
// prints one JSON object: upload and download throughput (bit/s), the
// 64-byte ping-pong round trip (median and p99, microseconds), and the
// request rate of 16 connections doing 64-byte ping-pongs (per second).
import net from 'node:net';

const [ip, bytesArg, pingsArg] = process.argv.slice(2);
const bytes = Number(bytesArg);
const pings = Number(pingsArg);
const block = Buffer.alloc(1 << 20, 0xa5);

function connect(port) {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host: ip, port, noDelay: true }, () => resolve(s));
    s.on('error', reject);
  });
}

/** Send `bytes` to discard, half-close, wait for the peer's close. */
async function upload() {
  const s = await connect(9);
  const t0 = process.hrtime.bigint();
  let sent = 0;
  await new Promise((resolve, reject) => {
    s.on('error', reject);
    s.on('end', resolve);
    s.resume();
    const more = () => {
      while (sent < bytes) {
        const n = Math.min(block.length, bytes - sent);
        sent += n;
        if (!s.write(n === block.length ? block : block.subarray(0, n))) return;
      }
      s.end();
    };
    s.on('drain', more);
    more();
  });
  const secs = Number(process.hrtime.bigint() - t0) / 1e9;
  s.destroy();
  return (bytes * 8) / secs;
}

/** Read from source until the peer closes. */
async function download() {
  const s = await connect(19);
  const t0 = process.hrtime.bigint();
  let got = 0;
  await new Promise((resolve, reject) => {
    s.on('data', (d) => (got += d.length));
    s.on('end', resolve);
    s.on('error', reject);
  });
  const secs = Number(process.hrtime.bigint() - t0) / 1e9;
  s.destroy();
  return { bps: (got * 8) / secs, got };
}

/** 64-byte ping-pong through echo. */
async function pingpong() {
  const s = await connect(7);
  const msg = Buffer.alloc(64, 0x42);
  const rtts = [];
  let pending = 0;
  let resolveOne = null;
  s.on('data', (d) => {
    pending -= d.length;
    if (pending <= 0 && resolveOne) resolveOne();
  });
  for (let i = 0; i < pings; i++) {
    const t0 = process.hrtime.bigint();
    pending = 64;
    await new Promise((resolve) => {
      resolveOne = resolve;
      s.write(msg);
    });
    rtts.push(Number(process.hrtime.bigint() - t0) / 1000);
  }
  s.destroy();
  rtts.sort((a, b) => a - b);
  return { median: rtts[Math.floor(rtts.length / 2)], p99: rtts[Math.floor(rtts.length * 0.99)] };
}

/** Request rate: `conns` connections each doing 64-byte ping-pongs for `secs`. */
async function requestRate(conns, secs) {
  const sockets = await Promise.all(Array.from({ length: conns }, () => connect(7)));
  const msg = Buffer.alloc(64, 0x43);
  let done = 0;
  const until = Date.now() + secs * 1000;
  const t0 = process.hrtime.bigint();
  await Promise.all(
    sockets.map(
      (s) =>
        new Promise((resolve) => {
          let pending = 64;
          s.on('data', (d) => {
            pending -= d.length;
            if (pending > 0) return;
            done++;
            if (Date.now() >= until) return resolve();
            pending = 64;
            s.write(msg);
          });
          s.write(msg);
        }),
    ),
  );
  const elapsed = Number(process.hrtime.bigint() - t0) / 1e9;
  for (const s of sockets) s.destroy();
  return done / elapsed;
}

const mode = process.argv[5] ?? 'all';
const result = {};
if (mode === 'all' || mode === 'bulk') {
  result.uploadBps = await upload();
  const down = await download();
  result.downloadBps = down.bps;
  result.downloadBytes = down.got;
}
if (mode === 'all' || mode === 'latency') {
  const rtt = await pingpong();
  result.rttMedianUs = rtt.median;
  result.rttP99Us = rtt.p99;
}
if (mode === 'all' || mode === 'rate') result.requestsPerSec = await requestRate(Number(process.env.LIBRETTO_BENCH_CONNS ?? 16), Number(process.env.LIBRETTO_BENCH_RATE_SECS ?? 3));
console.log(JSON.stringify(result));
