// The Linux side of the stack benchmark's baseline: the same three
// services as the netapp component (discard, source, echo), served by the
// Linux kernel's TCP through Node, so a client can measure Linux-to-Linux
// over a veth pair beside Linux-to-libretto over a TAP device.
//
// usage: node bench/linux-peer.mjs IP [SOURCE_BYTES]
import net from 'node:net';

const [ip, sourceBytesArg] = process.argv.slice(2);
const sourceBytes = Number(sourceBytesArg ?? 2 ** 30);
const block = Buffer.alloc(1 << 20, 0x5a);

net.createServer((s) => s.on('data', () => {}).on('end', () => s.end())).listen(9, ip);
net.createServer((s) => s.pipe(s)).listen(7, ip);
net
  .createServer((s) => {
    let sent = 0;
    const more = () => {
      while (sent < sourceBytes) {
        const n = Math.min(block.length, sourceBytes - sent);
        sent += n;
        if (!s.write(n === block.length ? block : block.subarray(0, n))) return;
      }
      s.end();
    };
    s.on('drain', more);
    s.on('data', () => {});
    s.on('error', () => {});
    more();
  })
  .listen(19, ip);
console.log(`linux-peer: discard 9, echo 7, source 19 (${sourceBytes} bytes) on ${ip}`);
