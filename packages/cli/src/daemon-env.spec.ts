import { describe, expect, it } from 'vitest';
import { daemonEnv } from './daemon-env.js';

describe('daemonEnv', () => {
  it('fixes glibc\'s mmap threshold for the daemon, keeping the rest of the environment', () => {
    expect(daemonEnv({ PATH: '/bin', KILN_LOG_LEVEL: 'warn' })).toEqual({ PATH: '/bin', KILN_LOG_LEVEL: 'warn', MALLOC_MMAP_THRESHOLD_: '131072' });
  });

  it('keeps a threshold the user set', () => {
    expect(daemonEnv({ MALLOC_MMAP_THRESHOLD_: '65536' }).MALLOC_MMAP_THRESHOLD_).toBe('65536');
  });
});
