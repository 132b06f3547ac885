import { describe, expect, it } from 'vitest';
import { SourceError, asKilnError, decodeWireError, describeError, encodeWireError, toConnectCode } from '../index.js';

describe('errors', () => {
  it('survives the wire with code and location', () => {
    const err = new SourceError('unknown instruction: FOO', 'Dockerfile', 3);
    const back = decodeWireError(toConnectCode(err.code), 'ignored', encodeWireError(err));
    expect(back.code).toBe('source');
    expect(back.details).toEqual({ file: 'Dockerfile', line: 3 });
    expect(describeError(back)).toBe('unknown instruction: FOO (Dockerfile:3)');
  });

  it('falls back to the Connect code when metadata is missing or garbled', () => {
    expect(decodeWireError(5, 'nope', null).code).toBe('not_found');
    expect(decodeWireError(14, 'down', '!!!').code).toBe('unavailable');
  });

  it('wraps foreign errors', () => {
    const e = asKilnError(new Error('boom'));
    expect(e.code).toBe('internal');
    expect(e.message).toBe('boom');
  });
});
