import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { readMac, writeMac, macToString, readU16, writeU16, readU32, writeU32, BROADCAST_MAC } from './ether.ts';

test('writeMac/readMac round-trip 48-bit values at the edges', () => {
  for (const mac of [0, 1, 0x0200_0000_0001, 0xfeff_ffff_fffe, BROADCAST_MAC]) {
    const b = new Uint8Array(8);
    writeMac(b, 1, mac);
    assert.is(readMac(b, 1), mac);
    assert.is(b[0], 0, 'byte before untouched');
    assert.is(b[7], 0, 'byte after untouched');
  }
});

test('writeMac puts the most significant byte first', () => {
  const b = new Uint8Array(6);
  writeMac(b, 0, 0x0211_2233_4455);
  assert.equal(Array.from(b), [0x02, 0x11, 0x22, 0x33, 0x44, 0x55]);
  assert.is(macToString(0x0211_2233_4455), '02:11:22:33:44:55');
});

test('u16 and u32 fields are big-endian and unsigned', () => {
  const b = new Uint8Array(6);
  writeU16(b, 0, 0xfffe);
  writeU32(b, 2, 0xfeed_beef);
  assert.equal(Array.from(b), [0xff, 0xfe, 0xfe, 0xed, 0xbe, 0xef]);
  assert.is(readU16(b, 0), 0xfffe);
  assert.is(readU32(b, 2), 0xfeed_beef, 'above 2^31 reads as a positive number');
});

test.run();
