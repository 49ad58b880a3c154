/**
 * The demo's reflector: sends every frame it receives back to its source
 * with the MACs swapped. Only the 12 address bytes pass through JavaScript:
 * the rest of each frame is gathered by the host from the received frame.
 */
import * as link from 'libretto:net/link@0.1.0';
import { readMac, writeMac, ETH_SRC } from '../../lib/ether.ts';
import { num, u64 } from '../../lib/abi.ts';

const counts = { frames: 0, bytes: 0, batches: 0, dropped: 0 };

export const server = {
  run() {
    const info = link.info();
    const mac = num(info.mac);
    for (;;) {
      const got = link.recv(info.maxBatch);
      if (got.length === 0) {
        if (link.wait(u64(num(link.now()) + 1_000_000_000)) === 'stop') return { tag: 'stopped' };
        continue;
      }
      const out = got.map((f) => {
        const head = new Uint8Array(12);
        writeMac(head, 0, readMac(f.head, ETH_SRC));
        writeMac(head, 6, mac);
        counts.bytes += f.len;
        return { head, body: [{ src: { tag: 'frame', val: f.id }, offset: u64(12), len: f.len - 12 }], offload: f.offload };
      });
      const r = link.send(out);
      counts.dropped += r.droppedFull + r.droppedInvalid;
      counts.frames += got.length;
      counts.batches++;
      link.release(got.map((f) => f.id));
    }
  },
};

export const control = {
  describe() {
    return { name: 'demo-reflector', version: `0.1.0+${__LIBRETTO_BACKEND__}` };
  },
  stats() {
    return [
      { name: 'frames', value: u64(counts.frames) },
      { name: 'bytes', value: u64(counts.bytes) },
      { name: 'batches', value: u64(counts.batches) },
      { name: 'dropped', value: u64(counts.dropped) },
    ];
  },
};
