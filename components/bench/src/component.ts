/**
 * The guest side of `libretto bench`: loops that cross a boundary many
 * times per call, so the host can time one call and divide.
 */
import * as benchHost from 'libretto:system/bench-host@0.1.0';
import * as benchPeer from 'libretto:system/bench-peer@0.1.0';
import * as link from '../../lib/link.ts';
import { NO_OFFLOAD, TxBatch } from '../../lib/linkcodec.ts';
import { ByteQueue } from 'libretto:io/buffers@0.1.0';
import { u32, u64 } from '../../lib/abi.ts';


let payload: ByteQueue | null = null;

export const bench = {
  noop() {},

  callHost(n: number) {
    for (let i = 0; i < n; i++) benchHost.noop();
  },

  callPeer(n: number) {
    for (let i = 0; i < n; i++) benchPeer.noop();
  },

  /**
   * Send `batches` batches of `size` frames of `frameLen` bytes through the
   * link (looped back by the host) and receive each batch back.
   */
  ringPacked(batches: number, size: number, frameLen: number) {
    const full = new Uint8Array(frameLen).fill(0xa5);
    const blob = new Uint8Array(size * (2 + frameLen));
    for (let i = 0; i < size; i++) {
      const at = i * (2 + frameLen);
      blob[at] = frameLen >>> 8;
      blob[at + 1] = frameLen & 0xff;
      blob.set(full, at + 2);
    }
    let received = 0;
    for (let b = 0; b < batches; b++) {
      benchHost.packedSend(blob);
      const got = benchHost.packedRecv(size);
      const dv = new DataView(got.buffer, got.byteOffset, got.byteLength);
      const ids = [];
      let at = 0;
      while (at < got.length) {
        ids.push(u32(dv.getUint32(at)));
        const headLen = dv.getUint16(at + 8);
        at += 10 + headLen;
      }
      received += ids.length;
      link.release(ids);
    }
    return u64(received);
  },

  ringBatches(batches: number, size: number, frameLen: number, gather: boolean) {
    return u64(run(batches, size, frameLen, gather));
  },
};

function run(batches: number, size: number, frameLen: number, gather: boolean): number {
  const HEAD = 54;
  const full = new Uint8Array(frameLen);
  full.fill(0xa5);
  full.set([0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2, 0x88, 0xb5]);
  const head = full.subarray(0, HEAD);
  if (gather && !payload) {
    payload = new ByteQueue(65536);
    payload.append(new Uint8Array(65536).fill(0x5a));
  }
  const tx = new TxBatch();
  for (let i = 0; i < size; i++) {
    if (gather) tx.frame(head, NO_OFFLOAD, [{ queue: payload!, offset: 0, len: frameLen - HEAD }]);
    else tx.frame(full, NO_OFFLOAD);
  }
  let received = 0;
  const ids: number[] = [];
  for (let b = 0; b < batches; b++) {
    link.send(tx);
    const got = link.recvCursor(size);
    ids.length = 0;
    while (got.next()) ids.push(got.id);
    received += ids.length;
    link.release(ids);
  }
  return received;
}
