// The benchmark client: measures one peer (libretto over TAP, or Linux
// over veth) with the same code.
//
// usage: node bench/stack-client.mjs IP BYTES PINGS
// prints one JSON object: upload and download throughput (bit/s) and the
// 64-byte ping-pong round trip (median and p99, microseconds).
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

const up = await upload();
const down = await download();
const rtt = await pingpong();
console.log(JSON.stringify({ uploadBps: up, downloadBps: down.bps, downloadBytes: down.got, rttMedianUs: rtt.median, rttP99Us: rtt.p99 }));
