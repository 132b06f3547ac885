import { describe, expect, it } from 'vitest';
import { createChannel } from './channel.js';

describe('channel', () => {
  it('delivers pushed items in order, then ends', async () => {
    const ch = createChannel<number>();
    ch.push(1);
    setTimeout(() => {
      ch.push(2);
      ch.end();
      ch.push(3);
    }, 5);
    const got: number[] = [];
    for await (const v of ch) got.push(v);
    expect(got).toEqual([1, 2]);
  });

  it('throws the failure after queued items', async () => {
    const ch = createChannel<number>();
    ch.push(1);
    ch.fail(new Error('gone'));
    const got: number[] = [];
    await expect(async () => {
      for await (const v of ch) got.push(v);
    }).rejects.toThrow('gone');
    expect(got).toEqual([1]);
  });
});
