/**
 * The demo's sender: sends numbered frames over its link (headers built in
 * JavaScript, bodies gathered by the host from a byte queue), keeps a bounded
 * window of them in flight, and checks each one that the reflector sends
 * back. Returns when every frame has come back, or fails after a second of
 * silence.
 */
import * as link from '../../lib/link.ts';
import { NO_OFFLOAD, TxBatch } from '../../lib/linkcodec.ts';
import { BROADCAST_MAC } from '../../lib/ether.ts';
import { u64 } from '../../lib/abi.ts';
import { ByteQueue } from 'libretto:io/buffers@0.1.0';
import { buildDemoHeader, checkDemoFrame, demoLen, demoOffset, demoPattern, DEMO_HEADER_LEN, PATTERN_LEN } from '../../lib/demo-frames.ts';

const TOTAL = 20_000;
const BATCH = 64;
const WINDOW = 512;
const SILENCE_NS = 1_000_000_000;

const counts = { sent: 0, received: 0, bad: 0, outOfOrder: 0, bytesSent: 0, bytesReceived: 0, waits: 0 };

export const server = {
  run() {
    const info = link.info();
    const mac = info.mac;
    const tx = new TxBatch();
    const pattern = demoPattern();
    const bodies = new ByteQueue(PATTERN_LEN);
    bodies.append(pattern);
    let expect = 0;
    let lastProgress = link.now();
    while (counts.received < TOTAL) {
      if (counts.sent < TOTAL && counts.sent - counts.received < WINDOW) {
        tx.reset();
        const n = Math.min(BATCH, TOTAL - counts.sent, WINDOW - (counts.sent - counts.received));
        for (let i = 0; i < n; i++) {
          const seq = counts.sent + i;
          const len = demoLen(seq);
          counts.bytesSent += len;
          tx.frame(buildDemoHeader(seq, BROADCAST_MAC, mac), NO_OFFLOAD, [
            { queue: bodies, offset: demoOffset(seq), len: len - DEMO_HEADER_LEN },
          ]);
        }
        const r = link.send(tx);
        counts.sent += r.sent;
        if (r.sent !== n) return { tag: 'failed', val: `link refused ${n - r.sent} of ${n} frames` };
      }
      const got = link.recv(info.maxBatch);
      if (got.length === 0) {
        const now = link.now();
        if (now - lastProgress > SILENCE_NS) {
          return { tag: 'failed', val: `no frame for 1 s after ${counts.received} of ${TOTAL}` };
        }
        counts.waits++;
        if (link.wait(now + 100_000_000) === 'stop') return { tag: 'stopped' };
        continue;
      }
      lastProgress = link.now();
      for (const f of got) {
        const seq = checkDemoFrame(f.head, f.len, pattern);
        if (seq < 0) counts.bad++;
        else {
          if (seq !== expect) counts.outOfOrder++;
          expect = seq + 1;
          counts.received++;
          counts.bytesReceived += f.len;
        }
      }
      link.release(got.map((f) => f.id));
    }
    return counts.bad === 0 && counts.outOfOrder === 0
      ? { tag: 'stopped' }
      : { tag: 'failed', val: `${counts.bad} bad and ${counts.outOfOrder} out-of-order frames came back` };
  },
};

export const control = {
  describe() {
    return { name: 'demo-sender', version: `0.1.0+${__LIBRETTO_BACKEND__}` };
  },
  stats() {
    return [
      { name: 'tx.frames', value: u64(counts.sent) },
      { name: 'tx.bytes', value: u64(counts.bytesSent) },
      { name: 'rx.frames', value: u64(counts.received) },
      { name: 'rx.bytes', value: u64(counts.bytesReceived) },
      { name: 'rx.bad', value: u64(counts.bad) },
      { name: 'rx.out-of-order', value: u64(counts.outOfOrder) },
      { name: 'waits', value: u64(counts.waits) },
    ];
  },
};
