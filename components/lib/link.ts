/**
 * The component side of `libretto:net/link`: the WIT import wrapped with
 * the packed codec and the engine-neutral value helpers, so component code
 * deals in frames, numbers and builders.
 */
import * as wit from 'libretto:net/link@0.1.0';
import { num, u32, u64 } from './abi.ts';
import { parseRx, RxCursor, type RxFrame, TxBatch, Placements } from './linkcodec.ts';

export interface LinkInfo {
  mac: number;
  mtu: number;
  maxFrame: number;
  offloads: { txCsum: boolean; tso: boolean; rxCsum: boolean; lro: boolean };
  headBytes: number;
  maxBatch: number;
}

export function info(): LinkInfo {
  const i = wit.info();
  return { ...i, mac: num(i.mac) };
}

export function recv(max: number): RxFrame[] {
  return parseRx(wit.recv(u32(max)));
}

/** Receive a batch as a cursor (no allocation per frame). */
export function recvCursor(max: number): RxCursor {
  return new RxCursor(wit.recv(u32(max)));
}

export function send(batch: TxBatch): wit.SendReport {
  return wit.send(batch.bytes(), batch.queues as never);
}

export function place(p: Placements): void {
  wit.place(p.bytes(), p.queues as never);
}

export function release(ids: readonly number[]): void {
  wit.release(ids.map(u32));
}

export type Wake = 'ready' | 'timeout' | 'stop';

/** Wait until frames arrive or `deadlineNs` (host monotonic ns) passes. */
export function wait(deadlineNs: number): Wake {
  return wit.wait(u64(deadlineNs)) as Wake;
}

export function now(): number {
  return num(wit.now());
}

export { TxBatch, Placements, RxCursor, type RxFrame };
