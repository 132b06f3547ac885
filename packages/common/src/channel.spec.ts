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

describe('channel pacing and abort', () => {
  it('resolves a push once the reader took the item, and counts queued items', async () => {
    const ch = createChannel<number>();
    let taken = false;
    const p = ch.push(1).then(() => (taken = true));
    void ch.push(2);
    expect(ch.size).toBe(2);
    await new Promise((r) => setTimeout(r, 5));
    expect(taken).toBe(false);
    const it = ch[Symbol.asyncIterator]();
    expect(await it.next()).toEqual({ value: 1, done: false });
    await p;
    expect(taken).toBe(true);
    expect(ch.size).toBe(1);
    ch.end();
    await expect(ch.push(3)).resolves.toBeUndefined();
    expect(await it.next()).toEqual({ value: 2, done: false });
    expect((await it.next()).done).toBe(true);
  });

  it('abort drops queued items, releases their producers and throws at once', async () => {
    const ch = createChannel<number>();
    const pending = [ch.push(1), ch.push(2)];
    ch.abort(new Error('stop'));
    await Promise.all(pending);
    expect(ch.closed).toBe(true);
    expect(ch.size).toBe(0);
    ch.fail(new Error('later'));
    const got: number[] = [];
    await expect(async () => {
      for await (const v of ch) got.push(v);
    }).rejects.toThrow('stop');
    expect(got).toEqual([]);
  });

  it('abort after end is a no-op: queued items still arrive', async () => {
    const ch = createChannel<number>();
    void ch.push(1);
    ch.end();
    ch.abort(new Error('ignored'));
    const got: number[] = [];
    for await (const v of ch) got.push(v);
    expect(got).toEqual([1]);
  });
});
