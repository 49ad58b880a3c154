/**
 * The demo's reflector: sends every frame it receives back to its source
 * with the MACs swapped. Only the 12 address bytes pass through JavaScript:
 * the rest of each frame is gathered by the host from the received frame.
 */
import * as link from '../../lib/link.ts';
import { TxBatch } from '../../lib/linkcodec.ts';
import { readMac, writeMac, ETH_SRC } from '../../lib/ether.ts';
import { u64 } from '../../lib/abi.ts';

const counts = { frames: 0, bytes: 0, batches: 0, dropped: 0 };

export const server = {
  run() {
    const info = link.info();
    const mac = info.mac;
    const tx = new TxBatch();
    const head = new Uint8Array(12);
    for (;;) {
      const got = link.recv(info.maxBatch);
      if (got.length === 0) {
        if (link.wait(link.now() + 1_000_000_000) === 'stop') return { tag: 'stopped' };
        continue;
      }
      tx.reset();
      for (const f of got) {
        writeMac(head, 0, readMac(f.head, ETH_SRC));
        writeMac(head, 6, mac);
        counts.bytes += f.len;
        tx.frame(head, f.offload, [{ frame: f.id, offset: 12, len: f.len - 12 }]);
      }
      const r = link.send(tx);
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
